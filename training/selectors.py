"""Reads for model versions, training runs and dataset snapshots."""

from django.db.models import QuerySet

from training.models import DatasetSnapshot, ModelVersion, TrainingRun


def model_version_get_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).first()


def model_version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("snapshot").all()


def training_run_list() -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related("model_version", "snapshot").all()


def training_run_in_progress() -> TrainingRun | None:
    return TrainingRun.objects.filter(status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING]).first()


def snapshot_list() -> QuerySet[DatasetSnapshot]:
    return DatasetSnapshot.objects.all()


def snapshot_latest() -> DatasetSnapshot | None:
    return DatasetSnapshot.objects.order_by("-created_at", "-id").first()
