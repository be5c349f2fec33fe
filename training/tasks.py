"""Celery tasks of the training queue."""

from celery import shared_task

from studies.tasks import TRANSIENT_ERRORS


@shared_task(
    name="training.training_run_execute",
    acks_late=True,
    autoretry_for=TRANSIENT_ERRORS,  # before the run is claimed; a claimed run is not claimed twice
    retry_backoff=True,
    max_retries=5,
)
def training_run_execute_task(run_id: int) -> str:
    from training.services import training_run_execute

    return training_run_execute(run_id=run_id).status


@shared_task(name="training.retrain_if_due")
def retrain_if_due_task() -> int | None:
    from training.services import retrain_if_due

    run = retrain_if_due()
    return run.pk if run else None
