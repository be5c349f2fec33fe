"""State changes for studies, predictions and reviews."""

import hashlib
import math
import uuid
from dataclasses import dataclass
from functools import partial
from typing import IO

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from inference.preprocessing import ImageDecodeError, load_grayscale
from studies.models import Label, Patient, Prediction, RejectReason, Review, Study
from studies.selectors import study_latest_prediction, study_reads_required, user_is_adjudicator, user_is_reviewer
from studies.tasks import study_predict_task


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
        gray = load_grayscale(data)
    except ImageDecodeError as exc:
        raise ValidationError({"image": str(exc)}) from exc
    return CheckedImage(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        width=gray.shape[1],
        height=gray.shape[0],
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
    transaction.on_commit(partial(study_predict_task.delay, study.id))
    return study


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
    study.reading_state = Study.Reading.FINAL
    study.label_final = label
    study.label_rule = Study.LabelRule.IMPORTED
    _study_save(checked=checked, study=study)
    Review.objects.create(study=study, reviewer=reviewer, label=label, comment="Imported dataset label.")
    return study, True


def study_mark_processing(*, study: Study) -> Study:
    study.status = Study.Status.PROCESSING
    study.error = ""
    study.save(update_fields=["status", "error", "status_changed_at"])
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
    transaction.on_commit(partial(study_predict_task.delay, study.id))
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
            entropy=-sum(p * math.log(p) for p in probabilities.values() if p > 0),
            inference_ms=inference_ms,
        )
        if heatmap_jpeg:
            prediction.heatmap.save(f"{study.sha256}-{model_version_id}.jpg", ContentFile(heatmap_jpeg), save=False)
        prediction.full_clean(exclude=["heatmap"])
        prediction.save()
        existing = prediction
    study_mark_predicted(study=study)
    return existing


def study_mark_predicted(*, study: Study) -> Study:
    study.status = Study.Status.PREDICTED
    study.error = ""
    study.save(update_fields=["status", "error", "status_changed_at"])
    return study


def _check_label(label: str) -> None:
    if label not in Label.values:
        raise ValidationError({"label": f"Unknown label {label!r}; expected one of {', '.join(Label.values)}."})


@transaction.atomic
def review_submit(
    *, study: Study, reviewer: AbstractBaseUser, label: str, comment: str = "", reading_ms: int | None = None
) -> Review:
    """A reader confirms or corrects a prediction. The study's final label then follows its rule:
    with one read required the latest read; with more, the readers' unanimous label, else adjudication."""
    _check_label(label)
    _prediction_to_review(study)
    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.reading_state == Study.Reading.REJECTED:
        raise ValidationError({"study": "This study was rejected; send it back before reading it."})
    review = Review(
        study=study,
        reviewer=reviewer,
        label=label,
        comment=comment.strip(),
        kind=Review.Kind.READ,
        round=study.reading_round,
        reading_ms=reading_ms,
    )
    review.full_clean()
    review.save()
    study_reading_resolve(study=study)
    return review


def review_confirm(
    *, study: Study, reviewer: AbstractBaseUser, comment: str = "", reading_ms: int | None = None
) -> Review:
    """A reviewer agrees with the latest prediction."""
    label = _prediction_to_review(study).label
    return review_submit(study=study, reviewer=reviewer, label=label, comment=comment, reading_ms=reading_ms)


def _prediction_to_review(study: Study) -> Prediction:
    """Reviews confirm or correct a prediction: a study without one cannot be reviewed yet."""
    prediction = study_latest_prediction(study)
    if prediction is None:
        raise ValidationError({"study": "This study has no prediction yet; it can be reviewed once predicted."})
    return prediction


def studies_requeue_stale(*, older_than_seconds: int) -> int:
    """Dispatch again the studies whose message was lost: still queued after a while."""
    cutoff = timezone.now() - timezone.timedelta(seconds=older_than_seconds)
    stale = Study.objects.filter(status=Study.Status.QUEUED, status_changed_at__lt=cutoff)
    count = 0
    for study in stale.iterator():
        study_requeue(study=study)
        count += 1
    return count


def study_reading_resolve(*, study: Study) -> Study:
    """Set the study's reading state and final label from the reviews of its current round."""
    if study.reading_state == Study.Reading.REJECTED:
        return study
    reviews = list(Review.objects.filter(study=study, round=study.reading_round).order_by("created_at", "id"))
    adjudications = [r for r in reviews if r.kind == Review.Kind.ADJUDICATION]
    by_reader = {r.reviewer_id: r.label for r in reviews if r.kind == Review.Kind.READ}  # each reader's latest
    required = study_reads_required(source=study.source)
    state, label, rule = (Study.Reading.READING if by_reader else Study.Reading.UNREAD), "", ""
    if adjudications:
        state, label, rule = Study.Reading.FINAL, adjudications[-1].label, Study.LabelRule.ADJUDICATED
    elif required <= 1 and by_reader:
        latest = [r for r in reviews if r.kind == Review.Kind.READ][-1]
        state, label, rule = Study.Reading.FINAL, latest.label, Study.LabelRule.SINGLE_READ
    elif len(by_reader) >= required:
        labels = set(by_reader.values())
        if len(labels) == 1:
            state, label, rule = Study.Reading.FINAL, labels.pop(), Study.LabelRule.UNANIMOUS
        else:
            state = Study.Reading.DISAGREEMENT
    study.reading_state, study.label_final, study.label_rule = state, label, rule
    study.save(update_fields=["reading_state", "label_final", "label_rule", "status_changed_at"])
    return study


@transaction.atomic
def review_adjudicate(*, study: Study, adjudicator: AbstractBaseUser, label: str, reason: str) -> Review:
    """An adjudicator settles readers' disagreement; the reason is kept with the final label."""
    _check_label(label)
    if not user_is_adjudicator(adjudicator):
        raise ValidationError({"study": "Only adjudicators may set a final label over the readers."})
    if not reason.strip():
        raise ValidationError({"reason": "Say why this label: the reason is kept with the final label."})
    study = Study.objects.select_for_update().get(pk=study.pk)
    if study.reading_state != Study.Reading.DISAGREEMENT:
        raise ValidationError({"study": "Only studies whose readers disagree go to adjudication."})
    review = Review(
        study=study,
        reviewer=adjudicator,
        label=label,
        comment=reason.strip(),
        kind=Review.Kind.ADJUDICATION,
        round=study.reading_round,
    )
    review.full_clean()
    review.save()
    study_reading_resolve(study=study)
    return review


@transaction.atomic
def study_reject(*, study: Study, reviewer: AbstractBaseUser, reason: str, comment: str = "") -> Study:
    """Take a study out of reading and out of every dataset, with a reason."""
    if reason not in RejectReason.values:
        raise ValidationError(
            {"reason": f"Unknown reason {reason!r}; expected one of {', '.join(RejectReason.values)}."}
        )
    study = Study.objects.select_for_update().get(pk=study.pk)
    study.reading_state = Study.Reading.REJECTED
    study.label_final, study.label_rule = "", ""
    study.rejection_reason, study.rejection_comment, study.rejected_by = reason, comment.strip(), reviewer
    study.full_clean()
    study.save()
    return study


@transaction.atomic
def study_send_back(*, study: Study, user: AbstractBaseUser) -> Study:
    """Start a new reading round: earlier reads, rejection and final label stop counting (they stay in history)."""
    study = Study.objects.select_for_update().get(pk=study.pk)
    study.reading_round += 1
    study.reading_state = Study.Reading.UNREAD
    study.label_final, study.label_rule = "", ""
    study.rejection_reason, study.rejection_comment, study.rejected_by = "", "", None
    study.save()
    return study


def study_assign(*, study: Study, reviewer_username: str | None) -> Study:
    """Put a study in one reviewer's queue (or, with None, back in everyone's)."""
    reviewer = None
    if reviewer_username:
        reviewer = get_user_model().objects.filter(username=reviewer_username).first()
        if reviewer is None or not user_is_reviewer(reviewer):
            raise ValidationError({"reviewer": f"{reviewer_username!r} is not a reviewer."})
    study.assigned_to = reviewer
    study.save(update_fields=["assigned_to", "status_changed_at"])
    return study
