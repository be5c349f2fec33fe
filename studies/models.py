from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class Label(models.TextChoices):
    COVID = "covid", "COVID-19"
    NORMAL = "normal", "Normal"
    PNEUMONIA = "pneumonia", "Other pneumonia"


class RejectReason(models.TextChoices):
    NOT_CHEST_XRAY = "not_chest_xray", "Not a chest X-ray"
    UNREADABLE = "unreadable", "Unreadable"
    WRONG_VIEW = "wrong_view", "Wrong view"
    IDENTIFIERS_VISIBLE = "identifiers_visible", "Identifiers visible"


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    VAL = "val", "Validation"
    TEST = "test", "Test (frozen)"


class Site(models.Model):
    """A hospital or data source. Its slug is what studies carry as ``source``; admins manage the list."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    reads_required = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(10)],
        help_text="Independent reads each study of this site needs before its label is final (disagreements go to "
        "adjudication). Empty: the deployment's REVIEW_READS_REQUIRED.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SiteMembership(models.Model):
    """A user's role at a site: uploaders see their own uploads there; reviewers and leads see all its studies."""

    class Role(models.TextChoices):
        UPLOADER = "uploader", "Uploader"
        REVIEWER = "reviewer", "Reviewer"
        LEAD = "lead", "Site lead"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="site_memberships")
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["site__name", "user_id"]
        constraints = [models.UniqueConstraint(fields=["user", "site"], name="one_role_per_user_and_site")]

    def __str__(self) -> str:
        return f"{self.user} is {self.get_role_display()} at {self.site}"


class Patient(models.Model):
    """A pseudonymous patient key, unique per site. No name, no birth date, no hospital number."""

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="patients")
    ref = models.CharField(max_length=128)
    # Assigned once, when the patient first enters a dataset snapshot; never changed after.
    split = models.CharField(max_length=8, choices=Split.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["site", "ref"], name="unique_patient_ref_per_site")]

    def __str__(self) -> str:
        return self.ref


def study_upload_to(instance: "Study", filename: str) -> str:
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else "img"
    return f"studies/{instance.sha256[:2]}/{instance.sha256}.{suffix}"


def study_rendition_upload_to(instance: "Study", filename: str) -> str:
    suffix = "jpg" if filename.lower().endswith(".jpg") else "png"  # JPEG: a PNG's or JPEG's (thumbnails only)
    return f"renditions/{instance.sha256[:2]}/{instance.sha256}.{suffix}"


class Study(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        PROCESSING = "processing", "Processing"
        PREDICTED = "predicted", "Predicted"
        FAILED = "failed", "Failed"
        # Labelled by a dataset import; not sent for prediction.
        IMPORTED = "imported", "Imported"
        # Not predicted, not in any dataset until a person decides (e.g. text burned into the pixels).
        HELD = "held", "Held for review"

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="studies")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="studies")
    image = models.FileField(upload_to=study_upload_to)
    # An 8-bit rendition for browsers, made once by the worker that predicts the study (an import's at import):
    # thumbnails are cut from it, not from the original.
    rendition = models.FileField(upload_to=study_rendition_upload_to, blank=True)
    sha256 = models.CharField(max_length=64, db_index=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    view = models.CharField(max_length=32, blank=True, help_text="PA, AP, AP Supine, lateral, ...")
    source = models.CharField(
        max_length=100,
        blank=True,
        db_index=True,
        help_text="The site's slug (set from ``site``), for per-source results.",
    )
    notes = models.TextField(blank=True)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    uploaded_at = models.DateTimeField(auto_now_add=True, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    error = models.TextField(blank=True)
    status_changed_at = models.DateTimeField(auto_now=True)
    # How many times a worker has started predicting this study; a study whose worker keeps dying
    # is failed with the reason after PREDICTION_MAX_ATTEMPTS (see studies_requeue_stale).
    attempts = models.PositiveSmallIntegerField(default=0)

    # Reading: set only by the reading services (studies/services.py), from the reviews of the current round.
    class Reading(models.TextChoices):
        UNREAD = "unread", "Unread"
        READING = "reading", "More reads needed"
        DISAGREEMENT = "disagreement", "Readers disagree"
        FINAL = "final", "Final label"
        REJECTED = "rejected", "Rejected"

    class LabelRule(models.TextChoices):
        SINGLE_READ = "single_read", "Single read (latest read)"
        UNANIMOUS = "unanimous", "Unanimous readers"
        ADJUDICATED = "adjudicated", "Adjudicated"
        IMPORTED = "imported", "Imported dataset label"

    reading_state = models.CharField(max_length=16, choices=Reading.choices, default=Reading.UNREAD, db_index=True)
    reading_round = models.PositiveIntegerField(default=1, help_text="Sending a study back starts a new round.")
    label_final = models.CharField(max_length=16, choices=Label.choices, blank=True, help_text="The dataset label.")
    label_rule = models.CharField(max_length=16, choices=LabelRule.choices, blank=True)
    rejection_reason = models.CharField(max_length=32, choices=RejectReason.choices, blank=True)
    rejection_comment = models.TextField(blank=True)
    rejected_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="assigned_studies",
        help_text="The reviewer whose queue holds this study; empty: every reviewer's.",
    )

    class Meta:
        ordering = ["-uploaded_at", "-id"]
        verbose_name_plural = "studies"
        indexes = [
            # The lists' order: a page far from the start is read from the index, not sorted.
            models.Index(fields=["-uploaded_at", "-id"], name="study_newest_first"),
            # The count of a site's review queue (?status=predicted&reviewed=false) from the index alone.
            models.Index(fields=["site", "status", "reading_state"], name="study_site_status_state"),
        ]

    def __str__(self) -> str:
        return f"Study {self.pk}"


class Prediction(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey("training.ModelVersion", on_delete=models.PROTECT, related_name="predictions")
    probabilities = models.JSONField(help_text='{"covid": p, "normal": p, "pneumonia": p}')
    label = models.CharField(max_length=16, choices=Label.choices)
    confidence = models.FloatField()
    inference_ms = models.FloatField()
    heatmap = models.FileField(upload_to="heatmaps/", blank=True)
    entropy = models.FloatField(null=True, help_text="Shannon entropy of the probabilities (nats): uncertainty.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["study", "model_version"], name="unique_prediction_per_model"),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.confidence:.2f}) for study {self.study_id}"


class Review(models.Model):
    """A reader's label, or an adjudicator's final word. The study's final label follows
    Study.label_rule: the latest read, the unanimous reads, or the adjudication."""

    class Kind(models.TextChoices):
        READ = "read", "Read"
        ADJUDICATION = "adjudication", "Adjudication"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews")
    label = models.CharField(max_length=16, choices=Label.choices)
    comment = models.TextField(blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.READ)
    round = models.PositiveIntegerField(default=1)
    reading_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Time the reader spent on the study.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.label} by {self.reviewer} on study {self.study_id}"


class AccessEvent(models.Model):
    """The audit trail, append-only: who looked at, changed or took patient data, who changed the active model,
    who logged in or failed to; when and from where. Written by studies.audit, never edited.

    Study, snapshot and model ids, never patient identifiers; kept when the study is deleted. ``site`` is the
    study's site: its leads see the event (events about no study, such as logins, only superusers)."""

    class Action(models.TextChoices):
        UPLOAD = "upload", "Study uploaded"
        IMPORT = "import", "Study imported"
        RELEASE = "release", "Held study released"
        IMAGE = "image", "Image viewed"
        HEATMAP = "heatmap", "Heatmap viewed"
        REVIEW = "review", "Study read"
        ADJUDICATE = "adjudicate", "Study adjudicated"
        REJECT = "reject", "Study rejected"
        SEND_BACK = "send_back", "Study sent back"
        EXPORT = "export", "Dataset exported"
        DELETE = "delete", "Study deleted"
        PROMOTE = "promote", "Model version activated"
        OVERRIDE = "override", "Model version activated against the gate"
        LOGIN = "login", "Logged in"
        LOGIN_FAILED = "login_failed", "Login failed"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    username = models.CharField(
        max_length=150, help_text="Kept when the account is deleted; for a failed login, the name tried."
    )
    action = models.CharField(max_length=16, choices=Action.choices, db_index=True)
    study_id_ref = models.PositiveIntegerField(null=True, blank=True, db_index=True, help_text="Study id.")
    site = models.ForeignKey(
        Site, on_delete=models.PROTECT, null=True, blank=True, related_name="+", help_text="The study's site."
    )
    detail = models.CharField(max_length=200, blank=True)
    address = models.GenericIPAddressField(null=True, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.username} {self.action} {self.study_id_ref or self.detail} at {self.at:%Y-%m-%d %H:%M}"
