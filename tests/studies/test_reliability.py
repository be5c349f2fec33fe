"""No study is lost: leases and attempts for dead workers, idempotent recording, micro-batches,
uploads while the broker or the database is down."""

from pathlib import Path

import pytest
from celery.exceptions import Retry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import OperationalError
from django.utils import timezone

from config.exceptions import exception_handler
from studies.models import Prediction, Study
from studies.services import prediction_record, studies_requeue_stale
from studies.tasks import requeue_stale_studies_task, study_predict_task
from tests.factories import StudyFactory, uploader
from tests.images import png_bytes


def _raising(error: Exception):
    """A stand-in for a function that fails with ``error`` whatever it is given."""

    def fail(*args, **kwargs):
        raise error

    return fail


def _age(study: Study, *, seconds: int, **fields) -> None:
    Study.objects.filter(pk=study.pk).update(
        status_changed_at=timezone.now() - timezone.timedelta(seconds=seconds), **fields
    )


@pytest.mark.django_db
def test_a_study_processing_past_the_lease_goes_back_to_the_queue_and_is_predicted(
    active_model, settings, django_capture_on_commit_callbacks
):
    settings.PREDICTION_LEASE_SECONDS = 60
    lost, running = StudyFactory(), StudyFactory()
    _age(lost, seconds=120, status=Study.Status.PROCESSING, attempts=1)
    _age(running, seconds=10, status=Study.Status.PROCESSING, attempts=1)
    settings.PREDICTION_BATCH_SIZE = 1
    with django_capture_on_commit_callbacks(execute=True):
        assert requeue_stale_studies_task.apply().get() == 1
    lost.refresh_from_db()
    running.refresh_from_db()
    assert lost.status == Study.Status.PREDICTED and lost.attempts == 2
    assert running.status == Study.Status.PROCESSING and running.attempts == 1


@pytest.mark.django_db
def test_a_study_whose_worker_died_on_every_attempt_is_failed_with_the_reason(settings):
    settings.PREDICTION_LEASE_SECONDS = 60
    settings.PREDICTION_MAX_ATTEMPTS = 3
    study = StudyFactory()
    _age(study, seconds=120, status=Study.Status.PROCESSING, attempts=3)
    assert studies_requeue_stale(older_than_seconds=60) == 1
    study.refresh_from_db()
    assert study.status == Study.Status.FAILED
    assert "did not finish in 3 attempts" in study.error


@pytest.mark.django_db
def test_a_worker_starting_a_study_counts_one_attempt(active_model):
    study = StudyFactory()
    assert study_predict_task.apply(args=[study.id]).get() == "done"
    study.refresh_from_db()
    assert study.attempts == 1 and study.status == Study.Status.PREDICTED


@pytest.mark.django_db
def test_one_message_predicts_the_waiting_studies_in_one_batch_and_theirs_find_them_done(active_model, settings):
    settings.PREDICTION_BATCH_SIZE = 8
    studies = [StudyFactory() for _ in range(3)]
    assert study_predict_task.apply(args=[studies[0].id]).get() == "done"
    assert Prediction.objects.count() == 3
    assert {p.inference_ms for p in Prediction.objects.all()} == {Prediction.objects.first().inference_ms}
    for study in studies[1:]:
        assert study_predict_task.apply(args=[study.id]).get() == "done"
    assert Prediction.objects.count() == 3
    assert set(Study.objects.values_list("status", flat=True)) == {Study.Status.PREDICTED}
    assert all(p.heatmap for p in Prediction.objects.all())


@pytest.mark.django_db
def test_a_message_waits_once_for_its_batch_to_fill_and_a_study_arriving_meanwhile_joins_it(
    active_model, settings, monkeypatch
):
    settings.PREDICTION_BATCH_SIZE, settings.PREDICTION_BATCH_WAIT_SECONDS = 8, 0.02
    first = StudyFactory()
    waits: list[float] = []

    def arrival(seconds: float) -> None:  # another upload lands while the worker waits
        waits.append(seconds)
        StudyFactory()

    monkeypatch.setattr("studies.services.time.sleep", arrival)
    assert study_predict_task.apply(args=[first.id]).get() == "done"
    assert waits == [0.02]
    assert Prediction.objects.count() == 2
    assert set(Study.objects.values_list("status", flat=True)) == {Study.Status.PREDICTED}


@pytest.mark.django_db
def test_draining_waits_once_for_a_short_batch_to_fill_and_a_study_arriving_meanwhile_joins_it(
    active_model, settings, monkeypatch
):
    settings.PREDICTION_BATCH_SIZE, settings.PREDICTION_BATCH_WAIT_SECONDS = 2, 0.02
    settings.PREDICTION_DRAIN_WAIT_SECONDS = 0.05
    studies = [StudyFactory() for _ in range(3)]
    waits: list[float] = []

    def arrival(seconds: float) -> None:
        waits.append(seconds)
        StudyFactory()

    monkeypatch.setattr("studies.services.time.sleep", arrival)
    assert study_predict_task.apply(args=[studies[0].id]).get() == "done"
    # The message's batch was full (no wait); the drain found one study, waited once, and took two.
    assert waits == [0.05]
    assert Prediction.objects.count() == 4
    assert set(Study.objects.values_list("status", flat=True)) == {Study.Status.PREDICTED}


@pytest.mark.django_db
def test_a_full_batch_waiting_is_taken_at_once(active_model, settings, monkeypatch):
    settings.PREDICTION_BATCH_SIZE, settings.PREDICTION_BATCH_WAIT_SECONDS = 2, 0.02
    settings.PREDICTION_DRAIN_SECONDS = 0
    studies = [StudyFactory() for _ in range(3)]
    waits: list[float] = []
    monkeypatch.setattr("studies.services.time.sleep", waits.append)
    assert study_predict_task.apply(args=[studies[0].id]).get() == "done"
    assert waits == [] and Prediction.objects.count() == 2


@pytest.mark.django_db
def test_an_unreadable_image_fails_alone_and_the_rest_of_its_batch_is_predicted(active_model, settings):
    settings.PREDICTION_BATCH_SIZE = 8
    good, broken = StudyFactory(), StudyFactory()
    with open(broken.image.path, "wb") as handle:
        handle.write(b"corrupted on disk")
    assert study_predict_task.apply(args=[good.id]).get() == "done"
    good.refresh_from_db()
    broken.refresh_from_db()
    assert good.status == Study.Status.PREDICTED
    assert broken.status == Study.Status.FAILED and "Not a readable PNG or JPEG image" in broken.error


@pytest.mark.django_db
def test_a_study_another_worker_holds_is_left_to_it(active_model):
    study = StudyFactory()
    _age(study, seconds=1, status=Study.Status.PROCESSING, attempts=1)
    assert study_predict_task.apply(args=[study.id]).get() == "busy"
    assert Prediction.objects.count() == 0


@pytest.mark.django_db
def test_recording_the_same_prediction_twice_keeps_one_row_and_one_file(active_model, media_root):
    study = StudyFactory()
    for _ in range(2):
        prediction_record(
            study=study,
            model_version_id=active_model.id,
            probabilities={"covid": 0.2, "normal": 0.7, "pneumonia": 0.1},
            inference_ms=3.0,
            heatmap_jpeg=b"\xff\xd8\xff jpeg",
        )
    assert Prediction.objects.count() == 1
    assert len(list((media_root / "heatmaps").iterdir())) == 1


@pytest.mark.django_db
def test_a_batch_racing_another_delivery_keeps_the_first_row_and_removes_its_own_heatmap(active_model, media_root):
    from inference.services import PredictionResult
    from studies.services import _prediction_build, _predictions_insert

    first, second = StudyFactory(), StudyFactory()
    result = PredictionResult({"covid": 0.2, "normal": 0.7, "pneumonia": 0.1}, "normal", 0.7, 3.0, b"\xff\xd8 a")
    # The other delivery's row, inserted after this batch looked, with its own heatmap file.
    theirs = _prediction_build(study=first, model_version_id=active_model.id, result=result)
    theirs.save()
    ours = [_prediction_build(study=s, model_version_id=active_model.id, result=result) for s in (first, second)]
    _predictions_insert(ours)
    assert Prediction.objects.count() == 2
    assert Prediction.objects.get(study=first).pk == theirs.pk
    kept = {Path(p.heatmap.name).name for p in Prediction.objects.all()}
    assert {p.name for p in (media_root / "heatmaps").iterdir()} == kept


@pytest.mark.django_db
def test_an_upload_while_the_broker_is_down_is_stored_queued_and_answers_201(
    api_client, broker_down, django_capture_on_commit_callbacks
):
    api_client.force_authenticate(uploader())
    with django_capture_on_commit_callbacks(execute=True) as dispatches:
        response = api_client.post(
            "/api/studies/", {"image": SimpleUploadedFile("x.png", png_bytes())}, format="multipart"
        )
    assert len(dispatches) == 1
    assert response.status_code == 201
    assert response.json()["status"] == Study.Status.QUEUED
    assert Study.objects.get().status == Study.Status.QUEUED


@pytest.mark.django_db
def test_a_database_outage_answers_503_with_retry_after_not_500():
    response = exception_handler(OperationalError("could not connect to server"), {})
    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    assert "nothing was stored" in response.data["detail"]


@pytest.mark.django_db
def test_an_upload_answers_without_querying_after_its_commit(api_client, django_capture_on_commit_callbacks):
    """A database lost after the commit cannot turn a stored study into an error and a retry."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    api_client.force_authenticate(uploader())
    with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=False):
        response = api_client.post(
            "/api/studies/", {"image": SimpleUploadedFile("x.png", png_bytes())}, format="multipart"
        )
    assert response.status_code == 201
    assert response.json()["prediction"] is None and response.json()["reviews"] == []
    sql = [q["sql"] for q in queries.captured_queries]
    commit = max(i for i, q in enumerate(sql) if "RELEASE SAVEPOINT" in q or q.startswith("COMMIT") or "INSERT" in q)
    assert not any(q.startswith("SELECT") for q in sql[commit + 1 :])


@pytest.mark.django_db
def test_a_database_lost_mid_batch_gives_the_studies_back_to_the_queue_for_the_retry(active_model, monkeypatch):
    import studies.services as services

    study = StudyFactory()
    gone = OperationalError("server closed the connection unexpectedly")
    monkeypatch.setattr(services, "predict_batch", _raising(gone))
    with pytest.raises((OperationalError, Retry)):  # autoretry: the task is sent again
        study_predict_task.apply(args=[study.id], throw=True)
    study.refresh_from_db()
    assert study.status == Study.Status.QUEUED and not study.error


@pytest.mark.django_db(transaction=True)  # the erasure commits while the batch runs, as another request would
def test_a_study_erased_while_its_batch_runs_is_left_out_and_the_rest_are_predicted(
    active_model, media_root, monkeypatch
):
    from studies import services

    kept, erased, other = StudyFactory(), StudyFactory(), StudyFactory()
    predict = services.predict_batch

    def erase_meanwhile(grays, loaded, sites):
        services.study_delete(study=Study.objects.get(pk=erased.pk))
        return predict(grays, loaded, sites=sites)

    monkeypatch.setattr(services, "predict_batch", erase_meanwhile)
    outcomes = services.study_predict_many(
        study_ids=[kept.pk, erased.pk, other.pk], model_version_id=active_model.pk, loaded=active_model_loaded()
    )
    assert outcomes == {kept.pk: "done", erased.pk: "missing", other.pk: "done"}
    assert set(Study.objects.values_list("status", flat=True)) == {Study.Status.PREDICTED}
    heatmaps = {Path(name).name for name in Prediction.objects.values_list("heatmap", flat=True)}
    assert len(heatmaps) == 2 and {p.name for p in (media_root / "heatmaps").iterdir()} == heatmaps
    renditions = {Path(name).name for name in Study.objects.values_list("rendition", flat=True)}
    assert len(renditions) == 2 and {p.name for p in (media_root / "renditions").rglob("*.*")} == renditions


def active_model_loaded():
    from training.selectors import model_version_get_active
    from training.services import model_version_load

    return model_version_load(version=model_version_get_active())


@pytest.mark.django_db
def test_an_upload_whose_transaction_fails_leaves_no_file(api_client, media_root, monkeypatch):
    from studies import services

    def database_lost(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services, "access_record", database_lost)  # after the files are written
    api_client.force_authenticate(uploader())
    response = api_client.post("/api/studies/", {"image": SimpleUploadedFile("x.png", png_bytes())}, format="multipart")
    assert response.status_code == 503
    assert Study.objects.count() == 0
    assert [p for p in media_root.rglob("*") if p.is_file()] == []


@pytest.mark.django_db
def test_a_batch_that_cannot_be_recorded_leaves_no_rendition_or_heatmap_behind(active_model, media_root, monkeypatch):
    from studies import services

    studies = [StudyFactory(), StudyFactory()]

    # After the renditions' files are written.
    monkeypatch.setattr(Study.objects, "bulk_update", _raising(RuntimeError("disk full")))
    outcomes = services.study_predict_many(
        study_ids=[s.pk for s in studies], model_version_id=active_model.pk, loaded=active_model_loaded()
    )
    assert set(outcomes.values()) == {"failed"}
    assert not [
        path for folder in ("renditions", "heatmaps") for path in (media_root / folder).rglob("*") if path.is_file()
    ]
    assert not any(Study.objects.values_list("rendition", flat=True))


@pytest.mark.django_db
def test_a_predicted_study_gets_its_rendition_once(active_model, media_root):
    from studies import services

    study = StudyFactory()
    assert not study.rendition
    services.study_predict_many(study_ids=[study.pk], model_version_id=active_model.pk, loaded=active_model_loaded())
    study.refresh_from_db()
    first = study.rendition.name
    assert first.startswith("renditions/") and (media_root / first).is_file()
    Prediction.objects.all().delete()  # predicted again (another delivery, a re-prediction): kept as it is
    Study.objects.filter(pk=study.pk).update(status=Study.Status.QUEUED)
    services.study_predict_many(study_ids=[study.pk], model_version_id=active_model.pk, loaded=active_model_loaded())
    study.refresh_from_db()
    assert study.rendition.name == first and len(list((media_root / "renditions").rglob("*.*"))) == 1


@pytest.mark.django_db
def test_two_deliveries_of_one_study_leave_one_rendition(active_model, media_root):
    from studies import services

    stale = StudyFactory()
    again = Study.objects.get(pk=stale.pk)  # claimed by a second worker before the first recorded anything
    loaded = active_model_loaded()
    services._studies_predict_claimed([stale], model_version_id=active_model.pk, loaded=loaded)
    first = Study.objects.get(pk=stale.pk).rendition.name
    services._studies_predict_claimed([again], model_version_id=active_model.pk, loaded=loaded)
    assert Study.objects.get(pk=stale.pk).rendition.name == first
    assert [p.relative_to(media_root).as_posix() for p in (media_root / "renditions").rglob("*.*")] == [first]


@pytest.mark.django_db
def test_erasing_a_study_loaded_before_its_rendition_was_recorded_removes_that_rendition(
    active_model, media_root, django_capture_on_commit_callbacks
):
    from studies import services

    study = StudyFactory()
    loaded_before = Study.objects.get(pk=study.pk)  # as a request that waited on the batch's row lock
    services.study_predict_many(study_ids=[study.pk], model_version_id=active_model.pk, loaded=active_model_loaded())
    assert Study.objects.get(pk=study.pk).rendition
    with django_capture_on_commit_callbacks(execute=True):
        services.study_delete(study=loaded_before)
    left = [
        p for folder in ("studies", "renditions", "heatmaps") for p in (media_root / folder).rglob("*") if p.is_file()
    ]
    assert not left


@pytest.mark.django_db
def test_a_rendition_that_cannot_be_made_does_not_fail_the_batch(active_model, monkeypatch):
    from studies import services

    study = StudyFactory()
    monkeypatch.setattr(services, "rendition_encode", _raising(ValueError("cannot encode")))
    outcomes = services.study_predict_many(
        study_ids=[study.pk], model_version_id=active_model.pk, loaded=active_model_loaded()
    )
    study.refresh_from_db()
    assert outcomes == {study.pk: "done"} and study.status == Study.Status.PREDICTED and not study.rendition
