"""The beat schedule lives in the database (editable in the admin) and points at real tasks."""

import pytest
from django_celery_beat.models import PeriodicTask

from config.celery import app


@pytest.mark.django_db
def test_nightly_retraining_and_a_requeue_job_every_minute_are_scheduled_and_registered():
    nightly = PeriodicTask.objects.get(task="training.retrain_if_due")
    assert nightly.enabled and (nightly.crontab.minute, nightly.crontab.hour) == ("0", "2")
    requeue = PeriodicTask.objects.get(task="inference.requeue_stale_studies")
    assert requeue.interval.every == 1 and requeue.interval.period == "minutes"
    app.loader.import_default_modules()
    assert {"training.retrain_if_due", "inference.requeue_stale_studies"} <= set(app.tasks)


def test_training_and_inference_run_on_separate_queues():
    assert app.amqp.router.route({}, "training.training_run_execute")["queue"].name == "training"
    assert app.amqp.router.route({}, "inference.study_predict")["queue"].name == "inference"
