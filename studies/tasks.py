"""Celery tasks of the inference queue (the prediction task glues the model runtime to the rows).

Registered names stay "inference.*": they are the wire contract with queued messages and the beat schedule."""

import logging

from celery import shared_task
from celery.signals import worker_process_init
from django.conf import settings
from django.db import InterfaceError, OperationalError

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS = (OperationalError, InterfaceError)


@shared_task(
    name="inference.study_predict",
    bind=True,
    acks_late=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    max_retries=5,
)
def study_predict_task(self, study_id: int) -> str:
    """Predict one study with the active model. Idempotent: a redelivery finds the prediction."""
    from inference.preprocessing import ImageDecodeError
    from inference.services import predict_image
    from studies.models import Prediction, Study
    from studies.services import (
        prediction_record,
        study_mark_failed,
        study_mark_predicted,
        study_mark_processing,
    )
    from training.selectors import model_version_get_active
    from training.services import model_version_load

    study = Study.objects.filter(pk=study_id).first()
    if study is None:
        return "missing"
    model_version = model_version_get_active()
    if model_version is None:
        study_mark_failed(study=study, reason="No active model is registered; train or import one first.")
        return "failed"
    if Prediction.objects.filter(study=study, model_version=model_version).exists():
        study_mark_predicted(study=study)
        return "done"
    study_mark_processing(study=study)
    try:
        result = predict_image(study.image.path, model_version_load(version=model_version), site=study.source)
    except ImageDecodeError as exc:
        study_mark_failed(study=study, reason=str(exc))
        return "failed"
    except Exception as exc:  # not transient: the model or the file is broken; store why
        logger.exception("Prediction failed for study %s", study_id)
        study_mark_failed(study=study, reason=f"{type(exc).__name__}: {exc}")
        return "failed"
    prediction_record(
        study=study,
        model_version_id=model_version.id,
        probabilities=result.probabilities,
        inference_ms=result.inference_ms,
        heatmap_jpeg=result.heatmap_jpeg,
    )
    return "done"


@shared_task(
    name="studies.repredict_unreviewed",
    bind=True,
    acks_late=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=True,
    max_retries=5,
)
def repredict_unreviewed_task(self, model_version_id: int, after_id: int = 0) -> int:
    """After a promotion: answer the unreviewed studies again with the new active model, one batch per
    message on the low-priority "repredict" queue. Gives way while new uploads wait, stops when the
    version is no longer active; old predictions stay for audit. Returns how many studies it answered."""
    from inference.services import predict_image
    from studies.models import Study
    from studies.selectors import studies_awaiting_reprediction, studies_waiting_for_prediction
    from studies.services import predictions_record_batch
    from training.models import ModelVersion
    from training.services import model_version_load

    version = ModelVersion.objects.filter(pk=model_version_id, is_active=True).first()
    if version is None:
        return 0
    if not self.request.is_eager and studies_waiting_for_prediction():
        self.apply_async((model_version_id, after_id), countdown=settings.REPREDICT_YIELD_SECONDS)
        return 0
    study_ids = studies_awaiting_reprediction(
        model_version_id=version.pk, after_id=after_id, limit=settings.REPREDICT_BATCH_SIZE
    )
    if not study_ids:
        return 0
    loaded = model_version_load(version=version)
    results = []
    for study in Study.objects.filter(pk__in=study_ids).order_by("pk"):
        try:
            results.append((study, predict_image(study.image.path, loaded, site=study.source)))
        except Exception:  # keep the study's earlier answer; the cursor moves past it
            logger.exception("Re-prediction failed for study %s", study.pk)
    predictions_record_batch(model_version_id=version.pk, results=results)
    if len(study_ids) == settings.REPREDICT_BATCH_SIZE:
        self.apply_async((model_version_id, study_ids[-1]))
    return len(results)


@shared_task(name="inference.requeue_stale_studies")
def requeue_stale_studies_task() -> int:
    """Beat job: the row, not the broker, holds the state; re-dispatch studies left queued."""
    from studies.services import studies_requeue_stale

    return studies_requeue_stale(older_than_seconds=settings.REQUEUE_AFTER_SECONDS)


@worker_process_init.connect
def warm_up_worker_process(**kwargs: object) -> None:
    """Load TensorFlow and the active model as a worker process starts, so the first
    study after a (re)start waits no longer than the others."""
    from training.selectors import model_version_get_active
    from training.services import model_version_load

    try:
        version = model_version_get_active()
        if version is not None:
            model_version_load(version=version)
    except Exception:  # a cold start is slower, never broken: the task loads the model itself
        logger.warning("Could not preload the active model", exc_info=True)
