"""The prediction task: fetch rows, call the runtime, store the result, decide on failure."""

import pytest
from django.utils import timezone

from studies.models import Prediction, Study
from studies.tasks import requeue_stale_studies_task, study_predict_task
from tests.factories import StudyFactory


@pytest.mark.django_db
def test_a_redelivered_message_finds_the_prediction_and_stops(active_model):
    study = StudyFactory()
    assert study_predict_task.apply(args=[study.id]).get() == "done"
    first = Prediction.objects.get()
    assert study_predict_task.apply(args=[study.id]).get() == "done"
    assert list(Prediction.objects.all()) == [first]
    study.refresh_from_db()
    assert study.status == Study.Status.PREDICTED


@pytest.mark.django_db
def test_an_unreadable_stored_file_marks_the_study_failed_with_the_reason(active_model):
    study = StudyFactory()
    with open(study.image.path, "wb") as handle:
        handle.write(b"corrupted on disk")
    assert study_predict_task.apply(args=[study.id]).get() == "failed"
    study.refresh_from_db()
    assert study.status == Study.Status.FAILED
    assert "Not a readable PNG or JPEG image" in study.error
    assert Prediction.objects.count() == 0


@pytest.mark.django_db
def test_a_broken_model_artifact_marks_the_study_failed_not_lost(active_model):
    with open(active_model.artifact.path, "wb") as handle:
        handle.write(b"not a keras file")
    active_model.name = "broken-model"
    active_model.save()
    study = StudyFactory()
    assert study_predict_task.apply(args=[study.id]).get() == "failed"
    study.refresh_from_db()
    assert study.status == Study.Status.FAILED and study.error


@pytest.mark.django_db
def test_a_deleted_study_is_skipped():
    assert study_predict_task.apply(args=[987654]).get() == "missing"


@pytest.mark.django_db
def test_studies_left_queued_are_dispatched_again(active_model, settings, django_capture_on_commit_callbacks):
    settings.REQUEUE_AFTER_SECONDS = 60
    settings.PREDICTION_BATCH_SIZE = 1  # the re-dispatched study alone, not the fresh one with it
    settings.PREDICTION_DRAIN_SECONDS = 0
    stale, fresh = StudyFactory(), StudyFactory()
    Study.objects.filter(pk=stale.pk).update(status_changed_at=timezone.now() - timezone.timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=True):
        assert requeue_stale_studies_task.apply().get() == 1
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.status == Study.Status.PREDICTED
    assert fresh.status == Study.Status.QUEUED


@pytest.mark.django_db
def test_after_a_new_version_is_activated_predictions_use_it(active_model, tiny_model_path):
    from django.core.files import File

    from tests.factories import ModelVersionFactory
    from training.services import model_version_promote

    StudyFactory()
    study_predict_task.apply(args=[Study.objects.get().id])
    with tiny_model_path.open("rb") as handle:
        newer = ModelVersionFactory(artifact=File(handle, name="newer.keras"))
    model_version_promote(model_version=newer, user=None, reason="test: roll forward by hand", override=True)
    later = StudyFactory()
    study_predict_task.apply(args=[later.id])
    assert Prediction.objects.get(study=later).model_version == newer
    assert Prediction.objects.exclude(study=later).get().model_version == active_model


@pytest.mark.django_db
def test_a_message_goes_on_with_the_queue_in_batches_then_the_others_find_theirs_done(active_model, settings):
    settings.PREDICTION_BATCH_SIZE = 2
    settings.PREDICTION_BATCH_WAIT_SECONDS = 0
    studies = StudyFactory.create_batch(5)
    assert study_predict_task.apply(args=[studies[0].id]).get() == "done"
    assert Study.objects.filter(status=Study.Status.PREDICTED).count() == 5  # 3 batches, one message
    assert Prediction.objects.count() == 5
    # The later messages find their study answered: no second prediction, no attempt counted.
    assert study_predict_task.apply(args=[studies[4].id]).get() == "done"
    assert Prediction.objects.count() == 5
    assert set(Study.objects.values_list("attempts", flat=True)) == {1}


@pytest.mark.django_db
def test_without_draining_a_message_takes_one_batch(active_model, settings):
    settings.PREDICTION_BATCH_SIZE = 2
    settings.PREDICTION_BATCH_WAIT_SECONDS = 0
    settings.PREDICTION_DRAIN_SECONDS = 0
    StudyFactory.create_batch(5)
    study_predict_task.apply(args=[Study.objects.order_by("pk").first().id])
    assert Study.objects.filter(status=Study.Status.PREDICTED).count() == 2
