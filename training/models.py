from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class DatasetSnapshot(models.Model):
    """An immutable list of (study, label, split) with a content hash."""

    content_hash = models.CharField(max_length=64, db_index=True)
    counts = models.JSONField(default=dict, help_text="Counts by split, class and source.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The latest review included: retraining is due when enough reviews come after it.
    last_review_id = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("export_datasetsnapshot", "Can export a dataset snapshot (images and labels)")]

    def __str__(self) -> str:
        return f"Snapshot {self.pk} ({self.content_hash[:10]})"


def snapshot_item_withdraw(collector, field, sub_objs, using) -> None:
    """SnapshotItem.study's on_delete: erasing a study leaves its items in their frozen snapshots as tombstones,
    withdrawn now and no longer linked to it (the studies app never asks which snapshots hold a study)."""
    collector.add_field_update(field.model._meta.get_field("withdrawn_at"), timezone.now(), sub_objs)
    collector.add_field_update(field, None, sub_objs)


class SnapshotItem(models.Model):
    """A study in a snapshot with its label and split. An erased study's item stays as a tombstone: study_key,
    label, split and withdrawn_at; exports and later snapshots (so later runs) never include it."""

    snapshot = models.ForeignKey(DatasetSnapshot, on_delete=models.CASCADE, related_name="items")
    study = models.ForeignKey(
        "studies.Study", on_delete=snapshot_item_withdraw, null=True, blank=True, related_name="+"
    )
    study_key = models.BigIntegerField(help_text="The study's id, kept when the study is erased.")
    label = models.CharField(max_length=16)
    split = models.CharField(max_length=8)
    withdrawn_at = models.DateTimeField(
        null=True, blank=True, help_text="When the study was erased: the case is withdrawn from this snapshot."
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["snapshot", "study_key"], name="unique_study_per_snapshot")]

    def __str__(self) -> str:
        withdrawn = f", withdrawn {self.withdrawn_at:%Y-%m-%d}" if self.withdrawn_at else ""
        return f"{self.study_key}: {self.label} ({self.split}{withdrawn})"


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        ACTIVE = "active", "Active"
        RETIRED = "retired", "Retired"

    name = models.CharField(max_length=100, unique=True)
    artifact = models.FileField(upload_to="models/")
    architecture = models.CharField(max_length=50)
    class_names = models.JSONField()
    input_size = models.PositiveIntegerField()
    metrics = models.JSONField(default=dict, blank=True)
    hyperparameters = models.JSONField(default=dict, blank=True, help_text="Training settings used.")
    model_card = models.TextField(blank=True)
    is_active = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE)
    gate_decision = models.TextField(blank=True, help_text="Why the promotion gate accepted or refused it.")
    gate = models.JSONField(
        default=dict, blank=True, help_text="The gate's decision with its per-source table (training.gate)."
    )
    decision_rule = models.JSONField(
        default=dict, blank=True, help_text="Temperature and per-class biases, global and per site (deployed)."
    )
    snapshot = models.ForeignKey(DatasetSnapshot, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="one_active_model"),
        ]
        permissions = [
            ("promote_modelversion", "Can activate a model version the gate accepts (promote or roll back)"),
            ("override_modelversion", "Can activate a model version the gate refuses (override)"),
        ]

    def __str__(self) -> str:
        return self.name


class ModelActivation(models.Model):
    """Every change of the active model: who, when, why."""

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="activations")
    previous = models.ForeignKey(ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reason = models.TextField()
    override = models.BooleanField(default=False, help_text="Activated against the gate's decision.")
    gate_reason = models.TextField(blank=True, help_text="What the gate said at the time.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.model_version} activated {self.created_at:%Y-%m-%d %H:%M}"


class EvaluationCase(models.Model):
    """One test case as a model version answered it, on the test split of one snapshot.

    Metrics, cards, plots and the gate are computed from these rows, so they can be recomputed
    and two versions compared case by case."""

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="evaluation_cases")
    snapshot = models.ForeignKey(DatasetSnapshot, on_delete=models.CASCADE, related_name="evaluation_cases")
    study = models.ForeignKey("studies.Study", on_delete=models.SET_NULL, null=True, related_name="+")
    study_key = models.BigIntegerField(help_text="The study's id, kept if the study is erased.")
    patient = models.CharField(max_length=128)
    source = models.CharField(max_length=100)
    label = models.CharField(max_length=16, help_text="The reviewed (true) label.")
    probabilities = models.JSONField(help_text="Adjusted probabilities, in the version's class order.")
    decided = models.CharField(max_length=16, help_text="The label the deployed decision rule gives.")

    class Meta:
        ordering = ["study_key"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_version", "snapshot", "study_key"], name="one_case_per_version_snapshot_study"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_version_id} on study {self.study_key}: {self.decided} (true {self.label})"


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.FloatField(default=0.0)
    epoch = models.PositiveIntegerField(default=0)
    epochs = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    history = models.JSONField(default=dict, blank=True, help_text="Per-epoch training curves.")
    plots = models.JSONField(default=dict, blank=True, help_text="Plot name → media path.")
    hyperparameters = models.JSONField(default=dict, blank=True)
    snapshot = models.ForeignKey(DatasetSnapshot, on_delete=models.SET_NULL, null=True, blank=True)
    model_version = models.OneToOneField(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="training_run"
    )
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    trigger = models.CharField(max_length=32, default="manual", help_text="manual, api, admin, schedule")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # The lock that keeps runs from overlapping, enforced by the database.
            models.UniqueConstraint(fields=["status"], condition=Q(status="running"), name="one_running_training_run"),
        ]
        permissions = [("start_trainingrun", "Can start a training run")]

    def __str__(self) -> str:
        return f"Training run {self.pk} ({self.status})"
