"""State changes for studies, predictions and reviews."""

import hashlib
import io
import logging
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import IO

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from config.celery import task_send
from inference.preprocessing import (
    ImageDecodeError,
    dicom_pixels,
    dicom_read,
    gray_check,
    gray_validate,
    is_dicom,
    pillow_gray,
    pillow_open,
    rendition_encode,
)
from inference.services import LoadedModel, PredictionResult, decode_many, predict_batch
from studies.audit import access_record
from studies.deidentify import (
    dicom_deidentify,
    image_clean,
    notes_check,
    patient_pseudonym,
    patient_ref_check,
    stored_file_is_deidentified,
)
from studies.models import AccessEvent, Label, Patient, Prediction, RejectReason, Review, Site, Study
from studies.selectors import (
    studies_queued_at_least,
    study_latest_prediction,
    study_reads_required,
    user_is_adjudicator,
    user_is_reviewer,
)
from studies.sites import (
    review_check_allowed,
    site_get_or_create,
    site_open_for_upload,
    study_delete_check_allowed,
    user_reviews_site,
)
from studies.tasks import study_predict_task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckedImage:
    """An upload that decoded as an X-ray, de-identified: the bytes to store (never the upload's own), their hash,
    size, file suffix and browser rendition; the DICOM patient's pseudonym, and why it is held, if it is."""

    data: bytes
    sha256: str
    width: int
    height: int
    suffix: str
    rendition: bytes = b""  # made only when asked (image_check)
    rendition_suffix: str = ""
    patient_ref: str = ""
    hold_reason: str = ""


def image_check(*, file: IO[bytes], source: str = "", patient_ref: str = "", rendition: bool = False) -> CheckedImage:
    """Decode an upload fully, its declared size checked first, and de-identify it, in memory, before anything is
    written (studies/deidentify.py); ValidationError says what is wrong. DICOM UIDs and the patient pseudonym are
    keyed by DEIDENTIFICATION_KEY within ``source``.

    ``rendition``: also make the browser rendition (an import's, whose studies are never predicted). An upload's
    is made by the worker that predicts it, from the image it decodes anyway (_renditions_write): the stretch
    and the encoding were a quarter of an upload's CPU in the web request (a DICOM's lossless PNG far more)."""
    data = file.read()
    try:
        if not data:
            raise ImageDecodeError("The file is empty.")
        dicom = is_dicom(data)
        if dicom:
            dataset = dicom_read(data)
            gray = gray_validate(dicom_pixels(dataset))
            clean = dicom_deidentify(
                dataset, key=settings.DEIDENTIFICATION_KEY, namespace=source.strip(), patient_ref=patient_ref.strip()
            )
        else:
            image = pillow_open(data)
            gray = gray_validate(pillow_gray(image))
            clean = image_clean(data, image)
    except ImageDecodeError as exc:
        raise ValidationError({"image": str(exc)}) from exc
    rendition_data, rendition_suffix = _rendition(gray_check(gray), dicom=dicom) if rendition else (b"", "")
    return CheckedImage(
        data=clean.data,
        sha256=hashlib.sha256(clean.data).hexdigest(),
        width=gray.shape[1],
        height=gray.shape[0],
        suffix=clean.suffix,
        rendition=rendition_data,
        rendition_suffix=rendition_suffix,
        patient_ref=clean.patient_ref,
        hold_reason=clean.hold_reason,
    )


def study_file_deidentified(*, study: Study) -> tuple[bytes, str]:
    """The study's image as it may leave the platform, with its file suffix: as stored when it was de-identified at
    upload; a file stored before de-identification existed is de-identified now (the stored file is left as is)."""
    with study.image.open("rb") as file:
        data = file.read()
    if stored_file_is_deidentified(data):
        return data, study.image.name.rsplit(".", 1)[-1]
    checked = image_check(file=io.BytesIO(data), source=study.source, patient_ref=patient_ref_export(study=study))
    return checked.data, checked.suffix


def patient_ref_export(*, study: Study) -> str:
    """The patient key an export carries: the stored pseudonym, or, for a key stored before pseudonyms were
    checked that looks like an identifier, a pseudonym of it."""
    ref = study.patient.ref
    if ref.startswith("anon:"):
        return ref
    try:
        return patient_ref_check(ref)
    except ValidationError:
        return patient_pseudonym(key=settings.DEIDENTIFICATION_KEY, namespace=study.source, patient_id=ref)


def patient_get_or_create(*, site: Site, ref: str = "") -> Patient:
    """A pseudonymous patient of a site (the same key at two sites is two patients); a study
    without a reference is its own patient."""
    ref = ref.strip()
    if not ref:  # a new patient for certain: no lookup, no savepoint
        return Patient.objects.create(site=site, ref=f"anon:{uuid.uuid4().hex}")
    patient, _ = Patient.objects.get_or_create(site=site, ref=ref)
    return patient


def _study_save(*, checked: CheckedImage, study: Study) -> Study:
    study.sha256 = checked.sha256
    study.width, study.height = checked.width, checked.height
    try:
        study.image.save(f"upload.{checked.suffix}", ContentFile(checked.data), save=False)
        if checked.rendition:
            study.rendition.save(f"rendition.{checked.rendition_suffix}", ContentFile(checked.rendition), save=False)
        # The related rows were just read in this transaction: checking that they exist again costs a
        # query each on every upload.
        study.full_clean(exclude=["site", "patient", "uploaded_by"])
        study.save()
    except Exception:
        _files_delete(study.image.name, study.rendition.name)  # a rejected study leaves no file behind
        raise
    return study


def _files_delete(*names: str) -> None:
    for name in names:
        if name:
            default_storage.delete(name)


def study_create(
    *,
    checked: CheckedImage,
    uploaded_by: AbstractBaseUser | None,
    site: Site | None,
    source: str = "",
    patient_ref: str = "",
    view: str = "",
    notes: str = "",
    address: str = "",
) -> Study:
    """Store a de-identified upload at ``site`` (its slug is the study's source; None: open the site
    named ``source``, as OPEN_SITES lets an upload do, in the same transaction) and dispatch its
    prediction once the row is committed; a study with text burned into its pixels is held for a
    person's decision instead (study_release). The audit trail records the upload (``address``: the
    client's). If the transaction does not commit (a database lost mid-upload), the files written go too."""
    study: Study | None = None
    try:
        with transaction.atomic():
            site = site or site_open_for_upload(user=uploaded_by, name=source.strip())
            study = Study(
                site=site,
                patient=patient_get_or_create(site=site, ref=patient_ref or checked.patient_ref),
                view=view.strip(),
                source=site.slug,
                notes=notes,
                uploaded_by=uploaded_by,
                status=Study.Status.HELD if checked.hold_reason else Study.Status.QUEUED,
                error=checked.hold_reason,
            )
            _study_save(checked=checked, study=study)
            access_record(
                user=uploaded_by, action=AccessEvent.Action.UPLOAD, study=study, detail=study.status, address=address
            )
            if not checked.hold_reason:
                # robust: an error there is logged and the study stays queued for the requeue job, so
                # anything that leaves this block was raised before the commit.
                transaction.on_commit(partial(study_prediction_dispatch, study_id=study.id), robust=True)
    except BaseException:
        if study is not None:
            _files_delete(study.image.name, study.rendition.name)
        raise
    return study


def study_prediction_dispatch(*, study_id: int) -> bool:
    """Send a stored study's prediction message. With the broker down the study stays ``queued``
    (it is stored, the upload answers 201) and the requeue job sends it once the broker is back."""
    return task_send(study_predict_task, study_id)


@transaction.atomic
def study_release(*, study: Study, user: AbstractBaseUser | None, address: str = "") -> Study:
    """A person checked a held study's pixels (no identifying text): send it for prediction (audited)."""
    if study.status != Study.Status.HELD:
        raise ValidationError({"study": f"Only held studies can be released; this one is {study.status}."})
    access_record(user=user, action=AccessEvent.Action.RELEASE, study=study, address=address)
    return _study_dispatch(study)


@transaction.atomic
def study_import(
    *,
    checked: CheckedImage,
    label: str,
    reviewer: AbstractBaseUser,
    patient_ref: str = "",
    view: str = "",
    source: str = "",
    upload_sha256: str = "",
) -> tuple[Study, bool]:
    """Import a labelled image as a reviewed study; idempotent by content hash (``upload_sha256``, the
    file's own hash, also finds a study stored before de-identification existed)."""
    _check_label(label)
    if checked.hold_reason:
        raise ValidationError({"image": checked.hold_reason + " Imports take only images without burned-in text."})
    hashes = [checked.sha256, upload_sha256] if upload_sha256 else [checked.sha256]
    existing = Study.objects.filter(sha256__in=hashes).first()
    if existing is not None:
        return existing, False
    site = site_get_or_create(name=source)
    study = Study(
        site=site,
        patient=patient_get_or_create(site=site, ref=patient_ref or checked.patient_ref),
        view=view.strip(),
        source=site.slug,
        status=Study.Status.IMPORTED,
    )
    study.reading_state = Study.Reading.FINAL
    study.label_final = label
    study.label_rule = Study.LabelRule.IMPORTED
    _study_save(checked=checked, study=study)
    Review.objects.create(study=study, reviewer=reviewer, label=label, comment="Imported dataset label.")
    access_record(user=reviewer, action=AccessEvent.Action.IMPORT, study=study, detail=label)
    return study, True


@transaction.atomic
def study_delete(*, study: Study, user: AbstractBaseUser | None = None, address: str = "") -> None:
    """Erase a study: the row with its predictions and reviews, and once committed its files (image, rendition,
    heatmaps). Only a site lead of its site or a superuser (``user`` None: a command, not a person). In a frozen
    snapshot the study becomes a tombstone (training.models.snapshot_item_withdraw): the snapshot keeps its id,
    label and split and when it was withdrawn, and no export or later snapshot has it. The audit trail keeps who
    deleted which study of which site."""
    if user is not None:
        study_delete_check_allowed(study=study, user=user)
    # The row locked first (waiting, not skipping; SQLite's writers queue anyway): a prediction batch
    # holding it commits before the files are listed, its rendition and heatmaps included.
    locked = Study.objects.select_for_update(of=("self",)).filter(pk=study.pk).values_list("image", "rendition")
    row = locked.first()
    if row is None:  # erased meanwhile by another request: nothing left to do
        return
    names = [*row, *(name for name in study.predictions.values_list("heatmap", flat=True) if name)]
    access_record(user=user, action=AccessEvent.Action.DELETE, study=study, address=address)
    study.delete()
    transaction.on_commit(partial(_files_delete, *names))


def study_mark_failed(*, study: Study, reason: str) -> Study:
    study.status = Study.Status.FAILED
    study.error = reason[:2000]
    study.save(update_fields=["status", "error", "status_changed_at"])
    return study


@transaction.atomic
def study_requeue(*, study: Study, user: AbstractBaseUser | None = None) -> Study:
    """Send a study for prediction again (after a failure, or a lost message or worker); a held one needs
    study_release. ``user``: a person asking, who must review the study's site (None: the requeue job,
    the admin's action)."""
    if user is not None and not user_reviews_site(user, study.site_id):
        raise PermissionDenied(f"Only reviewers or site leads of {study.site} may send its studies for prediction.")
    if study.status == Study.Status.HELD:
        raise ValidationError({"study": "This study is held for a human decision; release it (admin) first."})
    if study.status == Study.Status.IMPORTED:
        raise ValidationError({"study": "This study was imported with its label: there is nothing to predict."})
    if study.status == Study.Status.PREDICTED:
        raise ValidationError(
            {"study": "This study is predicted already; a newly promoted model answers it again by itself."}
        )
    return _study_dispatch(study)


def _study_dispatch(study: Study) -> Study:
    study.status = Study.Status.QUEUED
    study.error = ""
    study.save(update_fields=["status", "error", "status_changed_at"])
    transaction.on_commit(lambda: study_prediction_dispatch(study_id=study.id))
    return study


def _entropy(probabilities: dict[str, float]) -> float:
    """Shannon entropy of a prediction (nats): the reading queue's uncertainty."""
    return -sum(p * math.log(p) for p in probabilities.values() if p > 0)


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
        result = PredictionResult(probabilities, label, probabilities[label], inference_ms, heatmap_jpeg)
        existing = _prediction_insert(_prediction_build(study=study, model_version_id=model_version_id, result=result))
    study_mark_predicted(study=study)
    return existing


def _prediction_build(*, study: Study, model_version_id: int, result: PredictionResult) -> Prediction:
    """A model's output for a study, its heatmap file written, not yet inserted."""
    prediction = Prediction(
        study=study,
        model_version_id=model_version_id,
        probabilities=result.probabilities,
        label=result.label,
        confidence=result.confidence,
        entropy=_entropy(result.probabilities),
        inference_ms=result.inference_ms,
    )
    if result.heatmap_jpeg:
        name = f"{study.sha256}-{model_version_id}.jpg"
        prediction.heatmap.save(name, ContentFile(result.heatmap_jpeg), save=False)
    # The study and the model version were read in this transaction: no query to re-check that they exist.
    prediction.full_clean(exclude=["heatmap", "study", "model_version"], validate_constraints=False)
    return prediction


def _prediction_insert(prediction: Prediction) -> Prediction:
    """Insert one prediction; when another delivery of the same message got there first, keep
    theirs and remove our heatmap file (a duplicate delivery is harmless)."""
    try:
        with transaction.atomic():
            prediction.save()
    except IntegrityError:
        if prediction.heatmap:
            prediction.heatmap.delete(save=False)
        return Prediction.objects.get(study_id=prediction.study_id, model_version_id=prediction.model_version_id)
    return prediction


def _predictions_insert(predictions: list[Prediction]) -> None:
    """A batch's predictions in one INSERT; if another delivery inserted one of them meanwhile,
    one by one (each keeps the first)."""
    try:
        with transaction.atomic():
            Prediction.objects.bulk_create(predictions)
    except IntegrityError:
        for prediction in predictions:
            prediction.pk = None
            _prediction_insert(prediction)


def study_mark_predicted(*, study: Study) -> Study:
    study.status = Study.Status.PREDICTED
    study.error = ""
    study.save(update_fields=["status", "error", "status_changed_at"])
    return study


FREE_TEXT_MAX = 5000  # characters of free text: notes, a reader's comment or reason (the API's max_length)


def _free_text_check(text: str, *, field: str) -> None:
    """A reader's free text, shown to other readers: bounded, and no identifiers (as an upload's notes)."""
    if len(text) > FREE_TEXT_MAX:
        raise ValidationError({field: f"At most {FREE_TEXT_MAX:,} characters; this has {len(text):,}."})
    notes_check(text, field=field)


def _check_label(label: str) -> None:
    if label not in Label.values:
        raise ValidationError({"label": f"Unknown label {label!r}; expected one of {', '.join(Label.values)}."})


@transaction.atomic
def review_submit(
    *,
    study: Study,
    reviewer: AbstractBaseUser,
    label: str,
    comment: str = "",
    reading_ms: int | None = None,
    address: str = "",
) -> Review:
    """A reader confirms or corrects a prediction. The study's final label then follows its rule:
    with one read required the latest read; with more, the readers' unanimous label, else adjudication.
    Only a reviewer or lead of the study's site, never the uploader (unless ALLOW_SELF_REVIEW). Audited."""
    review_check_allowed(study=study, reviewer=reviewer)
    _check_label(label)
    _free_text_check(comment, field="comment")
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
    _review_record(review, AccessEvent.Action.REVIEW, address)
    return review


def _review_record(review: Review, action: str, address: str) -> None:
    access_record(
        user=review.reviewer,
        action=action,
        study=review.study,
        detail=f"{review.label}, round {review.round}",
        address=address,
    )


def review_confirm(
    *, study: Study, reviewer: AbstractBaseUser, comment: str = "", reading_ms: int | None = None, address: str = ""
) -> Review:
    """A reviewer agrees with the latest prediction."""
    label = _prediction_to_review(study).label
    return review_submit(
        study=study, reviewer=reviewer, label=label, comment=comment, reading_ms=reading_ms, address=address
    )


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


def study_reading_resolve(*, study: Study) -> Study:
    """Set the study's reading state and final label from the reviews of its current round."""
    if study.reading_state == Study.Reading.REJECTED:
        return study
    reviews = list(Review.objects.filter(study=study, round=study.reading_round).order_by("created_at", "id"))
    adjudications = [r for r in reviews if r.kind == Review.Kind.ADJUDICATION]
    by_reader = {r.reviewer_id: r.label for r in reviews if r.kind == Review.Kind.READ}  # each reader's latest
    required = study_reads_required(study=study)
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
def review_adjudicate(
    *, study: Study, adjudicator: AbstractBaseUser, label: str, reason: str, address: str = ""
) -> Review:
    """An adjudicator settles readers' disagreement; the reason is kept with the final label (audited)."""
    _check_label(label)
    _free_text_check(reason, field="reason")
    if not user_is_adjudicator(adjudicator):
        raise ValidationError({"study": "Only adjudicators may set a final label over the readers."})
    if not user_reviews_site(adjudicator, study.site_id):
        raise ValidationError(
            {"study": f"Only adjudicators who review studies of {study.site} may adjudicate this one."}
        )
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
    _review_record(review, AccessEvent.Action.ADJUDICATE, address)
    return review


@transaction.atomic
def study_reject(
    *, study: Study, reviewer: AbstractBaseUser, reason: str, comment: str = "", address: str = ""
) -> Study:
    """Take a study out of reading and out of every dataset, with a reason (a reader of its site). Audited,
    with the reason's code (the comment is free text and stays with the study)."""
    review_check_allowed(study=study, reviewer=reviewer)
    _free_text_check(comment, field="comment")
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
    access_record(user=reviewer, action=AccessEvent.Action.REJECT, study=study, detail=reason, address=address)
    return study


@transaction.atomic
def study_send_back(*, study: Study, user: AbstractBaseUser, address: str = "") -> Study:
    """Start a new reading round: earlier reads, rejection and final label stop counting (they stay in history).
    Only a reviewer or site lead of the study's site (PermissionDenied otherwise). Audited."""
    if not user_reviews_site(user, study.site_id):
        raise PermissionDenied(f"Only reviewers or site leads of {study.site} may send this study back.")
    study = Study.objects.select_for_update().get(pk=study.pk)
    study.reading_round += 1
    study.reading_state = Study.Reading.UNREAD
    study.label_final, study.label_rule = "", ""
    study.rejection_reason, study.rejection_comment, study.rejected_by = "", "", None
    study.save()
    access_record(
        user=user,
        action=AccessEvent.Action.SEND_BACK,
        study=study,
        detail=f"round {study.reading_round}",
        address=address,
    )
    return study


def study_assign(*, study: Study, user: AbstractBaseUser, reviewer_username: str | None) -> Study:
    """Put a study in one reviewer's queue (or, with None, back in everyone's): an adjudicator who reviews the
    study's site does (PermissionDenied otherwise)."""
    if not (user_is_adjudicator(user) and user_reviews_site(user, study.site_id)):
        raise PermissionDenied(f"Only adjudicators who review studies of {study.site} may assign this study.")
    reviewer = None
    if reviewer_username:
        reviewer = get_user_model().objects.filter(username=reviewer_username).first()
        if reviewer is None or not user_is_reviewer(reviewer):
            raise ValidationError({"reviewer": f"{reviewer_username!r} is not a reviewer."})
        if not user_reviews_site(reviewer, study.site_id):
            raise ValidationError({"reviewer": f"{reviewer_username!r} does not review studies of {study.site}."})
    study.assigned_to = reviewer
    study.save(update_fields=["assigned_to", "status_changed_at"])
    return study


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


def _lockable(queryset, *, skip_locked: bool = True):
    """Row locks where the database has them (PostgreSQL: two workers never claim the same study);
    SQLite's IMMEDIATE transactions already serialise writers. ``skip_locked=False`` waits for them: a
    batch records its claimed studies after a review or an erasure holding one of them commits (skipping
    would report a study being read as missing, and leave it processing until its lease ends)."""
    features = transaction.get_connection().features
    if features.has_select_for_update_skip_locked if skip_locked else features.has_select_for_update:
        return queryset.select_for_update(skip_locked=skip_locked, of=("self",))
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
    _batch_gather(more_waiting=more_waiting, wait=settings.PREDICTION_BATCH_WAIT_SECONDS)
    claimed = studies_claim_for_prediction(
        study_ids=study_ids, model_version_id=model_version_id, more_waiting=more_waiting
    )
    outcomes = _studies_predict_guarded(claimed, model_version_id=model_version_id, loaded=loaded)
    return {pk: outcomes.get(pk) or _outcome_unclaimed(pk, model_version_id) for pk in study_ids}


def studies_predict_queued(*, model_version_id: int, loaded: LoadedModel, limit: int) -> int:
    """Predict up to ``limit`` queued studies, oldest first, in one batch, as study_predict_many does,
    after waiting PREDICTION_DRAIN_WAIT_SECONDS once when fewer are queued; returns how many it took
    (0: none was queued)."""
    _batch_gather(more_waiting=limit - 1, wait=settings.PREDICTION_DRAIN_WAIT_SECONDS)
    claimed = studies_claim_for_prediction(study_ids=[], model_version_id=model_version_id, more_waiting=limit)
    _studies_predict_guarded(claimed, model_version_id=model_version_id, loaded=loaded)
    return len(claimed)


def _studies_predict_guarded(claimed: list[Study], *, model_version_id: int, loaded: LoadedModel) -> dict[int, str]:
    try:
        return _studies_predict_claimed(claimed, model_version_id=model_version_id, loaded=loaded)
    except (OperationalError, InterfaceError):
        # The database went away mid-batch: transient. Give the studies back to the queue (the
        # task retries; if even this fails, the lease brings them back) and let the task decide.
        _studies_release(study_ids=[s.pk for s in claimed])
        raise
    except Exception as exc:
        # The model or the storage is broken (transient database errors are retried by the task,
        # and the lease brings their studies back): store why on every study of the batch.
        logger.exception("Prediction failed for a batch of %s studies", len(claimed))
        return studies_mark_failed(study_ids=[s.pk for s in claimed], reason=f"{type(exc).__name__}: {exc}")


def _batch_gather(*, more_waiting: int, wait: float) -> None:
    """Let a micro-batch fill: when fewer studies wait than it could take, wait ``wait`` seconds once
    (uploads arriving together then share one pass)."""
    if more_waiting > 0 and wait > 0 and not studies_queued_at_least(more_waiting + 1):
        time.sleep(wait)


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
    predictions: list[Prediction] = []
    renditions: dict[int, str] = {}
    try:
        # Encoded and written before the transaction (on SQLite it holds the one write lock).
        _renditions_write([(study, gray) for study, gray in readable if not study.rendition], renditions)
        with transaction.atomic():
            # A study erased while the batch ran is left out (its prediction would fail the whole batch's
            # insert); locked rows make an erasure wait for this commit, then take the new files too.
            claimed_rows = Study.objects.filter(pk__in=[s.pk for s in claimed]).order_by("pk")  # as every batch locks
            locked = dict(_lockable(claimed_rows, skip_locked=False).values_list("pk", "rendition"))
            existing = set(locked)
            outcomes.update((study.pk, "missing") for study in claimed if study.pk not in existing)
            for study, error in zip(claimed, decoded, strict=True):
                if isinstance(error, Exception) and study.pk in existing:
                    study_mark_failed(study=study, reason=str(error))
                    outcomes[study.pk] = "failed"
            answered = [
                (study, result) for (study, _), result in zip(readable, results, strict=True) if study.pk in existing
            ]
            recorded = set(  # by an earlier delivery whose status write was lost: one query for the batch
                Prediction.objects.filter(
                    study_id__in=[study.pk for study, _ in answered], model_version_id=model_version_id
                ).values_list("study_id", flat=True)
            )
            for study, result in answered:
                if study.pk not in recorded:
                    predictions.append(_prediction_build(study=study, model_version_id=model_version_id, result=result))
            _predictions_insert(predictions)
            unused = _renditions_record(renditions, locked)
            outcomes.update((study.pk, "done") for study, _ in answered)
            Study.objects.filter(pk__in=[study.pk for study, _ in answered]).update(
                status=Study.Status.PREDICTED, error="", status_changed_at=timezone.now()
            )
    except BaseException:
        _files_delete(*(p.heatmap.name for p in predictions if p.heatmap), *renditions.values())
        raise
    _files_delete(*unused)
    return outcomes


def _renditions_write(studies_grays: list[tuple[Study, np.ndarray]], written: dict[int, str]) -> None:
    """Store the browser rendition of each study (an upload's is made here, from the image the worker
    decoded to predict it; image_check); each file's name goes into ``written`` (by study id) as soon as
    it is, for the caller to record or remove. Best effort: a study whose rendition cannot be stored is
    predicted all the same, and its pages cut their images from the original."""
    for study, gray in studies_grays:
        try:
            data, suffix = _rendition(gray, dicom=study.image.name.endswith(".dcm"))
            study.rendition.save(f"rendition.{suffix}", ContentFile(data), save=False)
            written[study.pk] = study.rendition.name
        except Exception:  # a cache for browsers: never a reason to fail the batch's predictions
            logger.warning("Study %s: its rendition could not be made or stored", study.pk, exc_info=True)


def _rendition(gray: np.ndarray, *, dicom: bool) -> tuple[bytes, str]:
    """A stretched image's browser rendition and its suffix: a DICOM's lossless (browsers are shown it)."""
    return rendition_encode(gray, max_side=settings.IMAGE_PREVIEW_MAX_SIDE, lossless=dicom)


def _renditions_record(written: dict[int, str], locked: dict[int, str]) -> list[str]:
    """Record the renditions written for the studies still without one, read under their row lock (another
    delivery of the same study may have recorded its own meanwhile); the names left unused."""
    fresh = {pk: name for pk, name in written.items() if pk in locked and not locked[pk]}
    Study.objects.bulk_update([Study(pk=pk, rendition=name) for pk, name in fresh.items()], ["rendition"])
    return [name for pk, name in written.items() if pk not in fresh]


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
