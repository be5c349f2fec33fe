"""Celery tasks of the inference queue (the prediction task glues the model runtime to the rows).

Registered names stay "inference.*": they are the wire contract with queued messages and the beat schedule."""

import logging
import time

from celery import shared_task
from celery.signals import worker_process_init
from django.conf import settings
from django.db import InterfaceError, OperationalError

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS = (OperationalError, InterfaceError)
# Both prediction tasks: acknowledged after they ran (a killed worker's message comes back), retried
# with back-off when the database blips; anything else is recorded on the study by the service.
RETRYING = {
    "bind": True,
    "acks_late": True,
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": True,
    "max_retries": 5,
}


@shared_task(name="inference.study_predict", **RETRYING)
def study_predict_task(self, study_id: int) -> str:
    """Predict a study with the active model, together with up to PREDICTION_BATCH_SIZE - 1 other
    waiting studies (a micro-batch; their own messages then find them done), then go on with the
    queue (studies_drain). Idempotent."""
    from studies.models import Study
    from studies.selectors import study_status

    if study_status(study_id) == Study.Status.PREDICTED:
        # Answered by a batch another message started (most messages of a burst): one read. Studies are
        # queued again only by a service that sets them queued; a promotion's re-prediction has its own task.
        outcome = "done"
    else:
        outcome = studies_predict(study_ids=[study_id], more_waiting=settings.PREDICTION_BATCH_SIZE - 1)[study_id]
    studies_drain(seconds=settings.PREDICTION_DRAIN_SECONDS)
    return outcome


def _active_model():  # -> tuple[ModelVersion, LoadedModel] | str
    """The active model version and its loaded model (once per process), or why there is none to use."""
    from training.selectors import model_version_get_active
    from training.services import model_version_load

    version = model_version_get_active()
    if version is None:
        return "No active model is registered; train or import one."
    try:
        return version, model_version_load(version=version)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:  # not transient: the artifact is broken
        logger.exception("Cannot load model version %s", version.pk)
        return f"Cannot load the active model: {type(exc).__name__}: {exc}"


def studies_predict(*, study_ids: list[int], more_waiting: int = 0) -> dict[int, str]:
    """The glue from ids to the prediction service: the active model version, loaded once per
    process, predicts these studies (plus up to ``more_waiting`` waiting ones) in one batch.
    Any task that predicts studies (uploads, re-prediction after a promotion) goes through here."""
    from studies.services import studies_mark_failed, study_predict_many

    active = _active_model()
    if isinstance(active, str):  # store why on the studies
        return studies_mark_failed(study_ids=study_ids, reason=active)
    version, loaded = active
    return study_predict_many(
        study_ids=study_ids, model_version_id=version.pk, loaded=loaded, more_waiting=more_waiting
    )


def studies_drain(*, seconds: float) -> int:
    """Go on predicting queued studies in full batches for up to ``seconds``, while any wait: under a
    burst of uploads the process answers the backlog batch after batch instead of waiting on the
    broker for the next message each time (the filesystem transport sleeps its polling interval
    whenever the prefetch window is full). The other messages then find their studies done.
    Returns how many studies it took. Problems are left to the messages: they record them."""
    from studies.selectors import studies_queued_at_least
    from studies.services import studies_predict_queued

    deadline, taken = time.monotonic() + seconds, 0
    while time.monotonic() < deadline and studies_queued_at_least(1):
        active = _active_model()  # each batch: a promotion mid-drain is followed at once
        if isinstance(active, str):
            break
        version, loaded = active
        batch = studies_predict_queued(model_version_id=version.pk, loaded=loaded, limit=settings.PREDICTION_BATCH_SIZE)
        if not batch:
            break
        taken += batch
    return taken


@shared_task(name="studies.repredict_unreviewed", **RETRYING)
def repredict_unreviewed_task(self, model_version_id: int, after_id: int = 0) -> int:
    """After a promotion: answer the unreviewed studies again with the new active model, one batch per
    message on the low-priority "repredict" queue. Gives way while new uploads wait, stops when the
    version is no longer active; old predictions stay for audit. Returns how many studies it answered."""
    from studies.selectors import studies_awaiting_reprediction, studies_waiting_for_prediction
    from training.models import ModelVersion

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
    outcomes = studies_predict(study_ids=study_ids)  # one batched forward pass, one transaction
    if len(study_ids) == settings.REPREDICT_BATCH_SIZE:
        self.apply_async((model_version_id, study_ids[-1]))
    return sum(outcome == "done" for outcome in outcomes.values())


@shared_task(name="inference.requeue_stale_studies")
def requeue_stale_studies_task() -> int:
    """Beat job: the row, not the broker, holds the state. Re-dispatch studies left queued, send
    back the ones processing past the lease (their worker died), fail them after too many attempts."""
    from studies.services import studies_requeue_stale

    return studies_requeue_stale(older_than_seconds=settings.REQUEUE_AFTER_SECONDS)


@worker_process_init.connect
def warm_up_worker_process(**kwargs: object) -> None:
    """Load TensorFlow and the active model as a worker process starts, and trace its compiled
    functions, so the first study after a (re)start waits no longer than the others."""
    from inference.services import warm_up
    from training.selectors import model_version_get_active
    from training.services import model_version_load

    try:
        version = model_version_get_active()
        if version is not None:
            warm_up(model_version_load(version=version))
    except Exception:  # a cold start is slower, never broken: the task loads the model itself
        logger.warning("Could not preload the active model", exc_info=True)
