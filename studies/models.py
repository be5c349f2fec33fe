from django.conf import settings
from django.db import models


class Label(models.TextChoices):
    COVID = "covid", "COVID-19"
    NORMAL = "normal", "Normal"
    PNEUMONIA = "pneumonia", "Other pneumonia"


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    VAL = "val", "Validation"
    TEST = "test", "Test (frozen)"


class Patient(models.Model):
    """A pseudonymous patient key. No name, no birth date, no hospital number."""

    ref = models.CharField(max_length=128, unique=True)
    # Assigned once, when the patient first enters a dataset snapshot; never changed after.
    split = models.CharField(max_length=8, choices=Split.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.ref


def study_upload_to(instance: "Study", filename: str) -> str:
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else "img"
    return f"studies/{instance.sha256[:2]}/{instance.sha256}.{suffix}"


class Study(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        PROCESSING = "processing", "Processing"
        PREDICTED = "predicted", "Predicted"
        FAILED = "failed", "Failed"
        # Labelled by a dataset import; not sent for prediction.
        IMPORTED = "imported", "Imported"

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="studies")
    image = models.FileField(upload_to=study_upload_to)
    sha256 = models.CharField(max_length=64, db_index=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    view = models.CharField(max_length=32, blank=True, help_text="PA, AP, AP Supine, lateral, ...")
    source = models.CharField(
        max_length=100, blank=True, db_index=True, help_text="Site or data source, for per-source results."
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

    class Meta:
        ordering = ["-uploaded_at", "-id"]
        verbose_name_plural = "studies"
        # The lists' order: a page far from the start is read from the index, not sorted.
        indexes = [models.Index(fields=["-uploaded_at", "-id"], name="study_newest_first")]

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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["study", "model_version"], name="unique_prediction_per_model"),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.confidence:.2f}) for study {self.study_id}"


class Review(models.Model):
    """A reviewer's label. A study's final label is its latest review."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews")
    label = models.CharField(max_length=16, choices=Label.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.label} by {self.reviewer} on study {self.study_id}"
