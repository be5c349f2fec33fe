"""When the nightly job retrains: new distinct reviews since the last successful run, or a site
whose predictions reviewers keep correcting."""

import pytest
from django.utils import timezone

from studies.models import Review
from tests.factories import PredictionFactory, ReviewFactory, StudyFactory
from training.models import DatasetSnapshot, TrainingRun
from training.services import retrain_due_reason, retrain_if_due


def _predicted_and_reviewed(source: str, *, predicted: str, reviewed: str, seed: int) -> None:
    prediction = PredictionFactory(study=StudyFactory(source=source, seed=seed, status="predicted"), label=predicted)
    ReviewFactory(study=prediction.study, label=reviewed)


def _succeeded_run() -> TrainingRun:
    last_review = Review.objects.order_by("-id").first()
    snapshot = DatasetSnapshot.objects.create(content_hash="h", last_review_id=last_review.id if last_review else 0)
    return TrainingRun.objects.create(
        status=TrainingRun.Status.SUCCEEDED, snapshot=snapshot, finished_at=timezone.now()
    )


@pytest.mark.django_db
def test_enough_distinct_newly_reviewed_studies_make_a_run_due_and_re_reviews_do_not_count():
    studies = [StudyFactory(seed=i) for i in range(3)]
    for study in studies:
        ReviewFactory(study=study)
    ReviewFactory(study=studies[0], label="covid")  # a re-review: still 3 studies
    assert retrain_due_reason(min_new_reviews=4) is None
    assert "3 studies newly reviewed" in retrain_due_reason(min_new_reviews=3)


@pytest.mark.django_db
def test_the_count_starts_again_after_a_successful_run_but_not_after_a_failed_one():
    for i in range(3):
        ReviewFactory(study=StudyFactory(seed=i))
    TrainingRun.objects.create(status=TrainingRun.Status.FAILED)
    assert retrain_due_reason(min_new_reviews=3) is not None
    _succeeded_run()
    assert retrain_due_reason(min_new_reviews=3) is None
    previous = StudyFactory(seed=9)
    ReviewFactory(study=previous)
    assert retrain_due_reason(min_new_reviews=1) is not None


@pytest.mark.django_db
def test_a_site_whose_predictions_reviewers_keep_correcting_makes_a_run_due(settings):
    settings.RETRAIN_MIN_NEW_REVIEWS = 1000
    for i in range(7):
        _predicted_and_reviewed("old", predicted="normal", reviewed="normal", seed=i)
    for i in range(10):
        _predicted_and_reviewed("new", predicted="covid", reviewed="normal" if i < 3 else "covid", seed=100 + i)
    assert retrain_due_reason() == "Reviewers corrected 3 of the latest 10 predictions for new."
    run = retrain_if_due()
    assert run.trigger == "schedule" and "Reviewers corrected 3 of the latest 10" in run.log


@pytest.mark.django_db
def test_fewer_corrections_or_fewer_reviews_do_not(settings):
    settings.RETRAIN_MIN_NEW_REVIEWS = 1000
    for i in range(9):
        _predicted_and_reviewed("new", predicted="covid", reviewed="normal", seed=i)  # 9 of 9, window is 10
    assert retrain_due_reason() is None
    for i in range(11):
        _predicted_and_reviewed("other", predicted="covid", reviewed="normal" if i < 2 else "covid", seed=50 + i)
    assert retrain_due_reason() is None
    assert retrain_if_due() is None


@pytest.mark.django_db
def test_agreement_per_source_and_week_is_served_by_the_api(api_client, reviewer_user):
    for i in range(4):
        _predicted_and_reviewed("new", predicted="covid", reviewed="normal" if i == 0 else "covid", seed=i)
    api_client.force_authenticate(reviewer_user)
    (week,) = api_client.get("/api/models/agreement/").json()
    assert week["source"] == "new"
    assert (week["reviewed"], week["agreed"], week["agreement"]) == (4, 3, 0.75)
    assert week["week"] == "{}-W{:02d}".format(*timezone.now().isocalendar()[:2])
