"""Reads for model versions, training runs and dataset snapshots."""

from django.db.models import Count, Q, QuerySet

from training.gate import CaseSet
from training.models import DatasetSnapshot, EvaluationCase, ModelVersion, SnapshotItem, TrainingRun


def model_version_get_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).first()


def model_version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("snapshot").all()


def training_run_list() -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related("model_version", "snapshot").all()


def training_run_in_progress() -> TrainingRun | None:
    return TrainingRun.objects.filter(status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING]).first()


def training_run_last_succeeded() -> TrainingRun | None:
    return (
        TrainingRun.objects.filter(status=TrainingRun.Status.SUCCEEDED)
        .select_related("snapshot")
        .order_by("-finished_at", "-id")
        .first()
    )


def snapshot_list() -> QuerySet[DatasetSnapshot]:
    """Snapshots with ``withdrawn``: how many of their cases were erased since (their counts stay as frozen)."""
    withdrawn = Count("items", filter=Q(items__withdrawn_at__isnull=False))
    # Meta.ordering does not apply to a grouped query: the pages need it said.
    return DatasetSnapshot.objects.annotate(withdrawn=withdrawn).order_by("-created_at", "-id")


def snapshot_items_current(snapshot: DatasetSnapshot) -> QuerySet[SnapshotItem]:
    """A snapshot's cases that were not erased since (withdrawn ones stay only as tombstones), in study order,
    with their studies and patients: what exports and runs read."""
    return snapshot.items.filter(withdrawn_at__isnull=True).select_related("study__patient").order_by("study_key")


def snapshot_latest() -> DatasetSnapshot | None:
    return DatasetSnapshot.objects.order_by("-created_at", "-id").first()


def evaluation_case_set(*, version: ModelVersion, snapshot_id: int, study_keys: set[int] | None = None) -> CaseSet:
    """A version's stored answers on a snapshot's test split (optionally only some studies)."""
    rows = EvaluationCase.objects.filter(model_version=version, snapshot_id=snapshot_id).order_by("study_key")
    if study_keys is not None:
        rows = rows.filter(study_key__in=study_keys)
    rows = list(rows.values_list("study_key", "patient", "source", "label", "decided"))
    names = list(version.class_names)
    return CaseSet.build(
        class_names=names,
        study_ids=[r[0] for r in rows],
        patients=[r[1] for r in rows],
        sources=[r[2] for r in rows],
        y_true=[names.index(r[3]) for r in rows],
        decided=[names.index(r[4]) for r in rows],
    )


def evaluation_cases_exist(*, version: ModelVersion, snapshot_id: int) -> bool:
    """Whether ``version`` was scored on any case of the snapshot's test split (none: the split is empty)."""
    return EvaluationCase.objects.filter(model_version=version, snapshot_id=snapshot_id).exists()


def evaluation_case_sets(
    *, candidate: ModelVersion, active: ModelVersion, snapshot_id: int
) -> tuple[CaseSet, CaseSet] | None:
    """Both versions' answers on the cases both were scored on; None when either has none there."""
    keys = set(
        EvaluationCase.objects.filter(model_version=candidate, snapshot_id=snapshot_id).values_list(
            "study_key", flat=True
        )
    ) & set(
        EvaluationCase.objects.filter(model_version=active, snapshot_id=snapshot_id).values_list("study_key", flat=True)
    )
    if not keys or candidate.class_names != active.class_names:
        return None
    return (
        evaluation_case_set(version=candidate, snapshot_id=snapshot_id, study_keys=keys),
        evaluation_case_set(version=active, snapshot_id=snapshot_id, study_keys=keys),
    )
