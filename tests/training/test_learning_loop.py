"""The learning loop end to end: seed, train, upload and review through the API, retrain, gate.

Images are generated with their class drawn in (tests/images.py), so a tiny model at
32 px really learns; the runs use the production services and builders.
"""

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from studies.models import Study
from tests.factories import ReviewFactory, StudyFactory, UserFactory, reviewer
from tests.images import png_bytes
from training.models import ModelActivation, ModelVersion, TrainingRun
from training.services import promotion_decision, retrain_if_due, training_run_create

CLASSES = ("covid", "normal", "pneumonia")
FAST = {"epochs": 8, "input_size": 32}


def _seed(count: int, source: str, offset: int = 0) -> None:
    for i in range(count):
        label = CLASSES[i % 3]
        ReviewFactory(study=StudyFactory(label=label, seed=offset + i, source=source), label=label)


def _run(capture, **kwargs) -> TrainingRun:
    with capture(execute=True):
        run = training_run_create(user=UserFactory(is_staff=True), trigger="test", hyperparameters=FAST, **kwargs)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    return run


@pytest.mark.django_db
def test_first_run_evaluates_on_the_test_split_and_becomes_active(django_capture_on_commit_callbacks, media_root):
    _seed(45, "site-a")
    run = _run(django_capture_on_commit_callbacks)
    version = run.model_version
    assert version.is_active and version.status == ModelVersion.Status.ACTIVE
    assert ModelActivation.objects.get().reason.startswith("Promotion gate: No active model")
    metrics = version.metrics
    assert metrics["n"] == run.snapshot.counts["by_split"]["test"]
    assert set(metrics["per_class"]) == set(CLASSES)
    assert metrics["ci"]["accuracy"][0] <= metrics["accuracy"] <= metrics["ci"]["accuracy"][1]
    assert "ece" in metrics["calibration"] and metrics["temperature"] > 0
    assert set(metrics["per_source"]) == {"site-a"}
    assert run.progress == 1.0 and run.epoch >= 1 and len(run.history["loss"]) == run.epoch
    for name in ("training_curves", "confusion_matrix", "roc", "reliability"):
        assert (media_root / run.plots[name]).stat().st_size > 1000
    assert "not a diagnostic device" in version.model_card.lower() or "research" in version.model_card.lower()


@pytest.mark.django_db
def test_reviews_through_the_api_trigger_a_retrain_that_the_gate_judges_on_the_frozen_split(
    api_client, django_capture_on_commit_callbacks
):
    _seed(45, "site-a")
    first = _run(django_capture_on_commit_callbacks)
    frozen_test = set(first.snapshot.items.filter(split="test").values_list("study_id", flat=True))

    # A new site's studies are uploaded, predicted by the active model and reviewed with true labels.
    api_client.force_authenticate(reviewer())
    for i in range(21):
        label = CLASSES[i % 3]
        with django_capture_on_commit_callbacks(execute=True):
            response = api_client.post(
                "/api/studies/",
                {"image": SimpleUploadedFile("x.png", png_bytes(label=label, seed=1000 + i)), "source": "site-b"},
                format="multipart",
            )
        assert response.status_code == 201
        study_id = response.json()["id"]
        assert Study.objects.get(pk=study_id).status == Study.Status.PREDICTED
        assert api_client.post(f"/api/studies/{study_id}/reviews/", {"label": label}).status_code == 201

    assert retrain_if_due(min_new_reviews=22) is None  # not enough new reviews yet
    with django_capture_on_commit_callbacks(execute=True):
        second = retrain_if_due(min_new_reviews=21)
    second.refresh_from_db()
    assert second.status == TrainingRun.Status.SUCCEEDED and second.trigger == "schedule"

    second_test = set(second.snapshot.items.filter(split="test").values_list("study_id", flat=True))
    assert frozen_test <= second_test  # old test cases stay; the new site extends the split
    candidate = second.model_version
    comparison = candidate.metrics["active_comparison"]
    assert comparison["active_name"] == first.model_version.name
    assert comparison["active_metrics"]["n"] == candidate.metrics["n"]  # both scored on the same cases
    sources_in_test = set(Study.objects.filter(pk__in=second_test).values_list("source", flat=True))
    assert set(candidate.metrics["per_source"]) == sources_in_test
    decision = promotion_decision(candidate=candidate.metrics, active=comparison["active_metrics"])
    assert candidate.gate_decision == decision.reason
    assert ModelVersion.objects.get(is_active=True) == (candidate if decision.promote else first.model_version)


@pytest.mark.django_db
def test_a_candidate_that_fails_the_gate_stays_a_candidate(django_capture_on_commit_callbacks, settings):
    _seed(45, "site-a")
    first = _run(django_capture_on_commit_callbacks)
    settings.PROMOTION = {**settings.PROMOTION, "COVID_SENSITIVITY_TOLERANCE": -2.0}  # impossible to meet
    ReviewFactory(study=StudyFactory(label="covid", seed=500), label="covid")
    second = _run(django_capture_on_commit_callbacks)
    candidate = second.model_version
    assert candidate.status == ModelVersion.Status.CANDIDATE and not candidate.is_active
    assert "COVID sensitivity would drop" in candidate.gate_decision
    assert ModelVersion.objects.get(is_active=True) == first.model_version
    assert ModelActivation.objects.count() == 1


@pytest.mark.django_db
def test_a_run_without_enough_curated_data_fails_with_the_reason(django_capture_on_commit_callbacks):
    _seed(2, "site-a")
    with django_capture_on_commit_callbacks(execute=True):
        run = training_run_create(user=None, trigger="test", hyperparameters=FAST)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert "Not enough curated data" in run.error
    assert ModelVersion.objects.count() == 0


def test_fast_settings_are_small(settings):
    """Guard: the suite trains at 32 px so it stays fast on 2 cores."""
    assert settings.TRAINING["INPUT_SIZE"] <= 32 and FAST["input_size"] == 32
    assert Path(settings.MEDIA_ROOT).name == "media"
