"""Re-prediction after a promotion: open studies get the new model's answer, old answers stay."""

from unittest import mock

import pytest
from django.core.files import File
from django.urls import reverse

from studies.models import Prediction, Review, Study
from studies.selectors import review_queue_list
from studies.tasks import repredict_unreviewed_task, study_predict_task
from tests.factories import ModelVersionFactory, StudyFactory, reviewer
from training.services import model_version_promote


def _predicted_studies(count: int) -> list[Study]:
    studies = [StudyFactory(label=("covid", "normal", "pneumonia")[i % 3]) for i in range(count)]
    for study in studies:
        study_predict_task.apply(args=[study.id])
    return studies


def _newer_version(tiny_model_path):
    with tiny_model_path.open("rb") as handle:
        return ModelVersionFactory(artifact=File(handle, name="newer.keras"))


@pytest.mark.django_db
def test_a_promotion_re_predicts_every_unreviewed_study_and_keeps_the_old_answers(
    active_model, tiny_model_path, settings, django_capture_on_commit_callbacks
):
    settings.REPREDICT_BATCH_SIZE = 2  # five studies: three messages, each its own batch
    studies = _predicted_studies(5)
    reviewed = studies[0]
    Review.objects.create(study=reviewed, reviewer=reviewer(), label="normal")
    newer = _newer_version(tiny_model_path)

    with django_capture_on_commit_callbacks(execute=True):
        model_version_promote(model_version=newer, user=None, reason="test: roll forward", override=True)

    for study in studies[1:]:
        assert set(Prediction.objects.filter(study=study).values_list("model_version", flat=True)) == {
            active_model.pk,
            newer.pk,
        }
        study.refresh_from_db()
        assert study.status == Study.Status.PREDICTED
    assert list(Prediction.objects.filter(study=reviewed).values_list("model_version", flat=True)) == [active_model.pk]


@pytest.mark.django_db
def test_the_review_queue_follows_the_new_predictions(
    active_model, tiny_model_path, django_capture_on_commit_callbacks
):
    studies = _predicted_studies(3)
    newer = _newer_version(tiny_model_path)
    with django_capture_on_commit_callbacks(execute=True):
        model_version_promote(model_version=newer, user=None, reason="test: roll forward", override=True)
    # The old model was least sure about the first study, the new one about the last.
    Prediction.objects.filter(model_version=active_model).update(confidence=0.99, entropy=0.05)
    Prediction.objects.filter(model_version=active_model, study=studies[0]).update(confidence=0.34, entropy=1.09)
    Prediction.objects.filter(model_version=newer).update(confidence=0.9, entropy=0.3)
    Prediction.objects.filter(model_version=newer, study=studies[-1]).update(confidence=0.34, entropy=1.09)
    queue = list(review_queue_list(user=reviewer()).values_list("pk", flat=True))
    assert queue[0] == studies[-1].pk


@pytest.mark.django_db
def test_the_study_page_shows_which_version_answered_and_the_earlier_answer(
    client, active_model, tiny_model_path, django_capture_on_commit_callbacks
):
    (study,) = _predicted_studies(1)
    newer = _newer_version(tiny_model_path)
    newer.name = "v-newer"
    newer.save()
    with django_capture_on_commit_callbacks(execute=True):
        model_version_promote(model_version=newer, user=None, reason="test: roll forward", override=True)
    client.force_login(reviewer())
    page = client.get(reverse("studies:detail", args=[study.pk])).content.decode()
    assert 'data-role="model-version">v-newer<' in page
    assert f"{active_model.name}:" in page.split('data-role="earlier-predictions"')[1]


@pytest.mark.django_db
def test_re_prediction_steps_back_while_uploads_wait(active_model, tiny_model_path):
    _predicted_studies(2)
    StudyFactory()  # a new upload, still queued
    newer = _newer_version(tiny_model_path)
    model_version_promote(model_version=newer, user=None, reason="test: roll forward", override=True)
    with mock.patch.object(repredict_unreviewed_task, "apply_async") as dispatch:
        assert repredict_unreviewed_task(newer.pk) == 0
    dispatch.assert_called_once()
    assert dispatch.call_args.kwargs["countdown"] > 0
    assert not Prediction.objects.filter(model_version=newer).exists()


@pytest.mark.django_db
def test_re_prediction_for_a_version_no_longer_active_does_nothing(active_model, tiny_model_path):
    _predicted_studies(2)
    newer = _newer_version(tiny_model_path)  # never promoted
    assert repredict_unreviewed_task.apply(args=[newer.pk]).get() == 0
    assert not Prediction.objects.filter(model_version=newer).exists()
