"""State changes for studies, predictions and reviews."""

import hashlib
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import KombuError

from inference.preprocessing import ImageDecodeError, image_check_decode
from inference.services import LoadedModel, PredictionResult, decode_many, predict_batch
from studies.models import Label, Patient, Prediction, Review, Study
from studies.selectors import study_latest_prediction
from studies.tasks import study_predict_task

logger = logging.getLogger(__name__)


def _dispatch_errors() -> tuple[type[BaseException], ...]:
    """What a publish raises while the broker is unreachable: kombu's own errors, socket errors and
    the transport client's (redis-py raises its ConnectionError on a stale pooled connection)."""
    connection = study_predict_task.app.connection_for_write()
    return (KombuError, OSError, *connection.connection_errors, *connection.channel_errors)


@dataclass(frozen=True)
class CheckedImage:
    """An upload that decoded as an X-ray: its bytes, hash, size and file suffix."""

    data: bytes
    sha256: str
    width: int
    height: int
    suffix: str


def image_check(*, file: IO[bytes]) -> CheckedImage:
    """Decode an upload fully before anything is written; ValidationError says what is wrong."""
    data = file.read()
    try:
        width, height = image_check_decode(data)
    except ImageDecodeError as exc:
        raise ValidationError({"image": str(exc)}) from exc
    return CheckedImage(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        width=width,
        height=height,
        suffix=_suffix_for(data),
    )


def _suffix_for(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    return "dcm"


def patient_get_or_create(*, ref: str = "") -> Patient:
    """A pseudonymous patient; a study without a reference is its own patient."""
    ref = ref.strip() or f"anon:{uuid.uuid4().hex}"
    patient, _ = Patient.objects.get_or_create(ref=ref)
    return patient


def _study_save(*, checked: CheckedImage, study: Study) -> Study:
    study.sha256 = checked.sha256
    study.width, study.height = checked.width, checked.height
    study.image.save(f"upload.{checked.suffix}", ContentFile(checked.data), save=False)
    try:
        study.full_clean()
        study.save()
    except Exception:
        study.image.delete(save=False)  # a rejected study leaves no file behind
        raise
    return study


@transaction.atomic
def study_create(
    *,
    checked: CheckedImage,
    uploaded_by: AbstractBaseUser | None,
    patient_ref: str = "",
    view: str = "",
    source: str = "",
    notes: str = "",
) -> Study:
    """Store an upload and dispatch its prediction once the row is committed."""
    study = Study(
        patient=patient_get_or_create(ref=patient_ref),
        view=view.strip(),
        source=source.strip(),
        notes=notes,
        uploaded_by=uploaded_by,
        status=Study.Status.QUEUED,
    )
    _study_save(checked=checked, study=study)
    transaction.on_commit(lambda: study_prediction_dispatch(study_id=study.id))
    return study


def study_prediction_dispatch(*, study_id: int) -> bool:
    """Send a stored study's prediction message. With the broker down the study stays ``queued``
    (it is stored, the upload answers 201) and the requeue job sends it once the broker is back."""
    try:
        # No result is awaited here: without ignore_result the Redis result backend would open a
        # subscription first, and fail on its own while the broker restarts.
        study_predict_task.apply_async((study_id,), ignore_result=True)
    except _dispatch_errors():
        logger.warning("Broker unreachable: study %s stays queued for the requeue job", study_id, exc_info=True)
        return False
    return True


@transaction.atomic
def study_import(
    *,
    checked: CheckedImage,
    label: str,
    reviewer: AbstractBaseUser,
    patient_ref: str = "",
    view: str = "",
    source: str = "",
) -> tuple[Study, bool]:
    """Import a labelled image as a reviewed study; idempotent by content hash."""
    if label not in Label.values:
        raise ValidationError({"label": f"Unknown label {label!r}; expected one of {', '.join(Label.values)}."})
    existing = Study.objects.filter(sha256=checked.sha256).first()
    if existing is not None:
        return existing, False
    study = Study(
        patient=patient_get_or_create(ref=patient_ref),
        view=view.strip(),
        source=source.strip(),
        status=Study.Status.IMPORTED,
    )
    _study_save(checked=checked, study=study)
    Review.objects.create(study=study, reviewer=reviewer, label=label, comment="Imported dataset label.")
    return study, True


def study_mark_processing(*, study: Study) -> Study:
    """A worker starts on the study: one more attempt, and the lease starts now."""
    study.status = Study.Status.PROCESSING
    study.error = ""
    study.attempts = F("attempts") + 1
    study.save(update_fields=["status", "error", "attempts", "status_changed_at"])
    study.refresh_from_db(fields=["attempts", "status_changed_at"])
    return study


def study_mark_failed(*, study: Study, reason: str) -> Study:
    study.status = Study.Status.FAILED
    study.error = reason[:2000]
    study.save(update_fields=["status", "error", "status_changed_at"])
    return study


@transaction.atomic
def study_requeue(*, study: Study) -> Study:
    """Send a study for prediction again (after a failure, or a lost message)."""
    study.status = Study.Status.QUEUED
    study.error = ""
    study.save(update_fields=["status", "error", "status_changed_at"])
    transaction.on_commit(lambda: study_prediction_dispatch(study_id=study.id))
    return study


@transaction.atomic
def prediction_record(
    *,
    study: Study,
    model_version_id: int,
    probabilities: dict[str, float],
    inference_ms: float,
    heatmap_jpeg: bytes | None = None,
) -> Prediction:
    """Store a model's output for a study and mark it predicted; once per model version."""
    existing = Prediction.objects.filter(study=study, model_version_id=model_version_id).first()
    if existing is None:
        label = max(probabilities, key=probabilities.__getitem__)
        prediction = Prediction(
            study=study,
            model_version_id=model_version_id,
            probabilities=probabilities,
            label=label,
            confidence=probabilities[label],
            inference_ms=inference_ms,
        )
        existing = _prediction_save(prediction=prediction, heatmap_jpeg=heatmap_jpeg)
    study_mark_predicted(study=study)
    return existing


def _prediction_save(*, prediction: Prediction, heatmap_jpeg: bytes | None) -> Prediction:
    """Insert a prediction; when another delivery of the same message got there first, keep
    theirs and remove our heatmap file (a duplicate delivery is harmless)."""
    if heatmap_jpeg:
        name = f"{prediction.study.sha256}-{prediction.model_version_id}.jpg"
        prediction.heatmap.save(name, ContentFile(heatmap_jpeg), save=False)
    prediction.full_clean(exclude=["heatmap"], validate_constraints=False)
    try:
        with transaction.atomic():
            prediction.save()
    except IntegrityError:
        if prediction.heatmap:
            prediction.heatmap.delete(save=False)
        return Prediction.objects.get(study_id=prediction.study_id, model_version_id=prediction.model_version_id)
    return prediction


def study_mark_predicted(*, study: Study) -> Study:
    study.status = Study.Status.PREDICTED
    study.error = ""
    study.save(update_fields=["status", "error", "status_changed_at"])
    return study


@transaction.atomic
def review_submit(*, study: Study, reviewer: AbstractBaseUser, label: str, comment: str = "") -> Review:
    """A reviewer confirms or corrects a prediction; the latest review is the study's label."""
    if label not in Label.values:
        raise ValidationError({"label": f"Unknown label {label!r}; expected one of {', '.join(Label.values)}."})
    _prediction_to_review(study)
    review = Review(study=study, reviewer=reviewer, label=label, comment=comment.strip())
    review.full_clean()
    review.save()
    return review


def review_confirm(*, study: Study, reviewer: AbstractBaseUser, comment: str = "") -> Review:
    """A reviewer agrees with the latest prediction."""
    return review_submit(study=study, reviewer=reviewer, label=_prediction_to_review(study).label, comment=comment)


def _prediction_to_review(study: Study) -> Prediction:
    """Reviews confirm or correct a prediction: a study without one cannot be reviewed yet."""
    prediction = study_latest_prediction(study)
    if prediction is None:
        raise ValidationError({"study": "This study has no prediction yet; it can be reviewed once predicted."})
    return prediction


def studies_requeue_stale(
    *,
    older_than_seconds: int,
    lease_seconds: int | None = None,
    max_attempts: int | None = None,
) -> int:
    """The row, not the broker, holds the state. Dispatch again the studies whose message was lost
    (``queued`` for a while) and the ones whose worker died (``processing`` past the lease); a study
    whose worker died ``max_attempts`` times is failed with the reason, never left stuck."""
    lease_seconds = settings.PREDICTION_LEASE_SECONDS if lease_seconds is None else lease_seconds
    max_attempts = settings.PREDICTION_MAX_ATTEMPTS if max_attempts is None else max_attempts
    now = timezone.now()
    lost_message = Q(
        status=Study.Status.QUEUED, status_changed_at__lt=now - timezone.timedelta(seconds=older_than_seconds)
    )
    lost_worker = Q(
        status=Study.Status.PROCESSING, status_changed_at__lt=now - timezone.timedelta(seconds=lease_seconds)
    )
    count = 0
    for study in Study.objects.filter(lost_message | lost_worker).only("pk", "status", "attempts").iterator():
        if study.status == Study.Status.PROCESSING and study.attempts >= max_attempts:
            study_mark_failed(
                study=study,
                reason=f"The prediction did not finish in {study.attempts} attempts: its worker stopped each time "
                "(killed, out of memory or restarted). Requeue it from the admin once the workers are healthy.",
            )
            logger.error("Study %s failed after %s lost attempts", study.pk, study.attempts)
        else:
            study_requeue(study=study)
        count += 1
    return count


def studies_claim_for_prediction(
    *, study_ids: Iterable[int], model_version_id: int, more_waiting: int = 0
) -> list[Study]:
    """Mark as ``processing`` (one more attempt each) the given studies that wait for this model
    version's prediction, plus up to ``more_waiting`` other queued studies, oldest first: a
    micro-batch. A study another worker holds is left to it (its lease protects it)."""
    study_ids = list(study_ids)
    with transaction.atomic():
        wanted = Q(pk__in=study_ids) & (
            Q(status=Study.Status.QUEUED)
            | (Q(status=Study.Status.PREDICTED) & ~Q(predictions__model_version_id=model_version_id))
        )
        claimed = list(_lockable(Study.objects.filter(wanted).order_by("pk").values_list("pk", flat=True)))
        if more_waiting > 0:
            others = Study.objects.filter(status=Study.Status.QUEUED).exclude(pk__in=claimed)
            claimed += list(_lockable(others.order_by("uploaded_at", "pk").values_list("pk", flat=True))[:more_waiting])
        if claimed:
            Study.objects.filter(pk__in=claimed).update(
                status=Study.Status.PROCESSING, error="", attempts=F("attempts") + 1, status_changed_at=timezone.now()
            )
    return list(Study.objects.filter(pk__in=claimed).order_by("pk"))


def _lockable(queryset):
    """Row locks where the database has them (PostgreSQL: two workers never claim the same study);
    SQLite's IMMEDIATE transactions already serialise writers."""
    if transaction.get_connection().features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True, of=("self",))
    return queryset


def study_predict_many(
    *, study_ids: Iterable[int], model_version_id: int, loaded: LoadedModel, more_waiting: int = 0
) -> dict[int, str]:
    """Predict studies with a loaded model version in one micro-batch and record the results in one
    transaction. Takes the given studies (and up to ``more_waiting`` other waiting ones), decodes
    them on the image threads, runs one batched forward + Grad-CAM pass, and stores predictions.
    Returns each given study's outcome: "done", "failed", "missing" or "busy" (another worker has it).
    Safe to repeat: a study predicted by this version already is "done" and is not predicted again."""
    study_ids = list(study_ids)
    claimed = studies_claim_for_prediction(
        study_ids=study_ids, model_version_id=model_version_id, more_waiting=more_waiting
    )
    outcomes: dict[int, str] = {}
    try:
        outcomes.update(_studies_predict_claimed(claimed, model_version_id=model_version_id, loaded=loaded))
    except (OperationalError, InterfaceError):
        # The database went away mid-batch: transient. Give the studies back to the queue (the
        # task retries; if even this fails, the lease brings them back) and let the task decide.
        _studies_release(study_ids=[s.pk for s in claimed])
        raise
    except Exception as exc:
        # The model or the storage is broken (transient database errors are retried by the task,
        # and the lease brings their studies back): store why on every study of the batch.
        logger.exception("Prediction failed for a batch of %s studies", len(claimed))
        outcomes.update(studies_mark_failed(study_ids=[s.pk for s in claimed], reason=f"{type(exc).__name__}: {exc}"))
    return {pk: outcomes.get(pk) or _outcome_unclaimed(pk, model_version_id) for pk in study_ids}


def _studies_release(*, study_ids: list[int]) -> None:
    try:
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()  # a broken connection: the update opens a fresh one
        Study.objects.filter(pk__in=study_ids, status=Study.Status.PROCESSING).update(
            status=Study.Status.QUEUED, status_changed_at=timezone.now()
        )
    except (OperationalError, InterfaceError):
        logger.warning("Could not release %s studies; the requeue job will after the lease", len(study_ids))


def _studies_predict_claimed(claimed: list[Study], *, model_version_id: int, loaded: LoadedModel) -> dict[int, str]:
    if not claimed:
        return {}
    decoded = decode_many([study.image.path for study in claimed])
    readable = [(study, gray) for study, gray in zip(claimed, decoded, strict=True) if not isinstance(gray, Exception)]
    results = predict_batch([gray for _, gray in readable], loaded, sites=[study.source for study, _ in readable])
    outcomes: dict[int, str] = {}
    with transaction.atomic():
        for study, error in zip(claimed, decoded, strict=True):
            if isinstance(error, Exception):
                study_mark_failed(study=study, reason=str(error))
                outcomes[study.pk] = "failed"
        for (study, _), result in zip(readable, results, strict=True):
            _prediction_from_result(study=study, model_version_id=model_version_id, result=result)
            outcomes[study.pk] = "done"
        Study.objects.filter(pk__in=[study.pk for study, _ in readable]).update(
            status=Study.Status.PREDICTED, error="", status_changed_at=timezone.now()
        )
    return outcomes


def _prediction_from_result(*, study: Study, model_version_id: int, result: PredictionResult) -> Prediction:
    existing = Prediction.objects.filter(study=study, model_version_id=model_version_id).first()
    if existing is not None:
        return existing
    prediction = Prediction(
        study=study,
        model_version_id=model_version_id,
        probabilities=result.probabilities,
        label=result.label,
        confidence=result.confidence,
        inference_ms=result.inference_ms,
    )
    return _prediction_save(prediction=prediction, heatmap_jpeg=result.heatmap_jpeg)


def _outcome_unclaimed(study_id: int, model_version_id: int) -> str:
    study = Study.objects.filter(pk=study_id).only("status").first()
    if study is None:
        return "missing"
    if Prediction.objects.filter(study_id=study_id, model_version_id=model_version_id).exists():
        if study.status != Study.Status.PREDICTED:  # recorded, but the status write was lost
            study_mark_predicted(study=study)
        return "done"
    if study.status == Study.Status.FAILED:
        return "failed"
    if study.status == Study.Status.IMPORTED:
        return "skipped"
    return "busy"


def studies_mark_failed(*, study_ids: Iterable[int], reason: str) -> dict[int, str]:
    """Fail the studies waiting for a prediction that cannot be made now, with the reason (no
    active model, a broken one). Returns each study's outcome: "failed", or "missing" if deleted."""
    study_ids = list(study_ids)
    Study.objects.filter(pk__in=study_ids, status__in=[Study.Status.QUEUED, Study.Status.PROCESSING]).update(
        status=Study.Status.FAILED, error=reason[:2000], status_changed_at=timezone.now()
    )
    existing = set(Study.objects.filter(pk__in=study_ids).values_list("pk", flat=True))
    return {pk: "failed" if pk in existing else "missing" for pk in study_ids}
