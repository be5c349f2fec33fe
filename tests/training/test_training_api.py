"""Training runs, the run lock and dataset snapshots through the API."""

import csv
import io
import zipfile

import pytest
from django.db import IntegrityError, transaction

from tests.factories import ReviewFactory, StudyFactory, UserFactory, ml_lead
from training.models import TrainingRun
from training.services import snapshot_create


@pytest.mark.django_db
def test_only_staff_may_start_a_training_run(api_client):
    api_client.force_authenticate(UserFactory())
    assert api_client.post("/api/training-runs/", {}).status_code == 403
    assert TrainingRun.objects.count() == 0


@pytest.mark.django_db
def test_staff_start_returns_202_and_the_run_is_dispatched_on_commit(api_client, django_capture_on_commit_callbacks):
    api_client.force_authenticate(ml_lead())
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = api_client.post("/api/training-runs/", {"epochs": 3, "backbone": "small_cnn"}, format="json")
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["progress"] == 0.0 and body["model_version"] is None
    assert len(callbacks) == 1
    assert TrainingRun.objects.get().hyperparameters == {"epochs": 3, "backbone": "small_cnn"}
    detail = api_client.get(f"/api/training-runs/{body['id']}/").json()
    assert {"status", "progress", "metrics", "model_version"} <= set(detail)


@pytest.mark.django_db
def test_a_second_run_is_refused_while_one_is_in_progress(api_client):
    TrainingRun.objects.create(status=TrainingRun.Status.RUNNING)
    api_client.force_authenticate(ml_lead())
    response = api_client.post("/api/training-runs/", {}, format="json")
    assert response.status_code == 400
    assert "already running" in str(response.json())


@pytest.mark.django_db
def test_an_unknown_backbone_returns_400(api_client):
    api_client.force_authenticate(ml_lead())
    response = api_client.post("/api/training-runs/", {"backbone": "gpt"}, format="json")
    assert response.status_code == 400 and "backbone" in response.json()


@pytest.mark.django_db(transaction=True)
def test_the_database_lets_only_one_run_be_running():
    TrainingRun.objects.create(status=TrainingRun.Status.RUNNING)
    with pytest.raises(IntegrityError), transaction.atomic():
        TrainingRun.objects.create(status=TrainingRun.Status.RUNNING)


@pytest.mark.django_db
def test_a_run_that_lost_the_lock_fails_with_the_reason():
    from training.services import training_run_execute

    TrainingRun.objects.create(status=TrainingRun.Status.RUNNING, heartbeat_at=None)
    waiting = TrainingRun.objects.create()
    run = training_run_execute(run_id=waiting.pk)
    assert run.status == TrainingRun.Status.FAILED
    assert "Another training run was running" in run.error


@pytest.mark.django_db
def test_datasets_are_listed_and_exported_as_zip_with_labels_csv(api_client):
    study = StudyFactory(source="site-a", view="PA")
    ReviewFactory(study=study, label="pneumonia")
    snapshot = snapshot_create()
    api_client.force_authenticate(ml_lead())
    listed = api_client.get("/api/datasets/").json()["results"]
    assert listed[0]["id"] == snapshot.id and listed[0]["counts"]["total"] == 1

    response = api_client.get(f"/api/datasets/{snapshot.id}/export/")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    rows = list(csv.DictReader(io.StringIO(archive.read("labels.csv").decode())))
    assert list(rows[0]) == ["path", "label", "source", "patient", "view", "sex", "age"]
    assert rows[0]["label"] == "pneumonia" and rows[0]["source"] == "site-a" and rows[0]["view"] == "PA"
    assert archive.read(rows[0]["path"]) == study.image.open("rb").read()


@pytest.mark.django_db
def test_non_staff_cannot_export_a_dataset(api_client):
    snapshot = snapshot_create()
    api_client.force_authenticate(UserFactory())
    assert api_client.get(f"/api/datasets/{snapshot.id}/export/").status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize(
    "status, age_field, reason",
    [
        (TrainingRun.Status.RUNNING, "heartbeat_at", "no heartbeat"),  # its worker died
        (TrainingRun.Status.QUEUED, "created_at", "No training worker started this run"),  # never picked up
    ],
)
def test_a_stale_run_no_longer_blocks_a_new_one(
    api_client, django_capture_on_commit_callbacks, status, age_field, reason
):
    from datetime import timedelta

    from django.utils import timezone

    from training.services.runs import STALE_AFTER, training_run_execute

    stale = TrainingRun.objects.create(status=status)
    TrainingRun.objects.filter(pk=stale.pk).update(**{age_field: timezone.now() - STALE_AFTER - timedelta(minutes=1)})
    api_client.force_authenticate(ml_lead())
    with django_capture_on_commit_callbacks(execute=False):
        response = api_client.post("/api/training-runs/", {}, format="json")
    assert response.status_code == 202
    stale.refresh_from_db()
    assert stale.status == TrainingRun.Status.FAILED and reason in stale.error
    assert training_run_execute(run_id=stale.pk).status == TrainingRun.Status.FAILED  # a late message runs nothing


@pytest.mark.django_db(transaction=True)  # the commit hook runs, as in production (a flushed database: no groups)
def test_with_the_broker_down_a_run_start_answers_503_and_does_not_block_the_next(api_client, monkeypatch):
    from kombu.exceptions import OperationalError

    from training.tasks import training_run_execute_task

    def unreachable(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(training_run_execute_task, "apply_async", unreachable)
    api_client.force_authenticate(UserFactory(is_superuser=True))
    response = api_client.post("/api/training-runs/", {}, format="json")
    assert response.status_code == 503 and response["Retry-After"]
    assert "broker was unreachable" in response.json()["detail"]
    assert TrainingRun.objects.get().status == TrainingRun.Status.FAILED

    monkeypatch.undo()
    sent = []
    monkeypatch.setattr(training_run_execute_task, "apply_async", lambda args, **options: sent.append(args))
    assert api_client.post("/api/training-runs/", {}, format="json").status_code == 202
    assert len(sent) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"backbone": "small_cnn", "weights": "imagenet"}, "no pretrained weights"),
        ({"backbone": "vgg16", "weights": "/nonexistent.weights.h5"}, "not found"),
    ],
)
def test_weights_a_backbone_cannot_start_from_are_a_400_before_any_run_is_queued(api_client, fields, message):
    api_client.force_authenticate(ml_lead())
    response = api_client.post("/api/training-runs/", fields, format="json")
    assert response.status_code == 400 and message in response.json()["weights"][0]
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_a_database_blip_before_a_run_starts_is_retried_not_lost(monkeypatch):
    from celery.exceptions import Retry
    from django.db import OperationalError

    from training import services
    from training.tasks import training_run_execute_task

    calls = []

    def flaky(*, run_id):
        calls.append(run_id)
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services, "training_run_execute", flaky)
    run = TrainingRun.objects.create()
    with pytest.raises(Retry):  # scheduled again (eager mode reports it), not failed with the error
        training_run_execute_task.apply(args=[run.pk]).get()
    assert calls == [run.pk]


@pytest.mark.django_db(transaction=True)  # the beat writes from a thread of its own: committed rows
def test_a_run_keeps_its_heartbeat_during_one_long_step(monkeypatch):
    import threading
    from datetime import timedelta

    from training.services import runs

    monkeypatch.setattr(runs, "HEARTBEAT_EVERY", timedelta(seconds=0.05))
    run = TrainingRun.objects.create(status=TrainingRun.Status.RUNNING, heartbeat_at=None)
    with runs._heartbeat(run.pk):
        threading.Event().wait(0.3)  # one step that logs nothing: no epoch ends, no log line
    run.refresh_from_db()
    assert run.heartbeat_at is not None
