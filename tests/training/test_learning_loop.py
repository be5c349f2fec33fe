"""The learning loop end to end: seed, train, upload and review through the API, retrain, gate.

Images are generated with their class drawn in (tests/images.py), so a tiny model at
32 px really learns; the runs use the production services and builders.
"""

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from studies.models import Study
from tests.factories import ReviewFactory, StudyFactory, ml_lead, reviewer, uploader
from tests.images import png_bytes
from training.models import ModelActivation, ModelVersion, TrainingRun
from training.services import retrain_due_reason, retrain_if_due, training_run_create

CLASSES = ("covid", "normal", "pneumonia")
FAST = {"epochs": 8, "input_size": 32}


def _seed(count: int, source: str, offset: int = 0) -> None:
    for i in range(count):
        label = CLASSES[i % 3]
        ReviewFactory(study=StudyFactory(label=label, seed=offset + i, source=source), label=label)


def _run(capture, **kwargs) -> TrainingRun:
    with capture(execute=True):
        run = training_run_create(user=ml_lead(), trigger="test", hyperparameters=FAST, **kwargs)
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


def _upload_and_review(api_client, capture, *, count: int, source: str, inverted: bool, seed: int) -> list[int]:
    """A site's studies uploaded through the API, predicted by the active model, reviewed with true labels
    (by one of the site's reviewers; the uploader cannot review their own uploads)."""
    site_uploader, site_reviewer = uploader(site_name=source), reviewer(site_name=source)
    ids = []
    for i in range(count):
        label = CLASSES[i % 3]
        image = png_bytes(label=label, seed=seed + i, inverted=inverted)
        api_client.force_authenticate(site_uploader)
        with capture(execute=True):
            response = api_client.post(
                "/api/studies/",
                {"image": SimpleUploadedFile("x.png", image), "source": source, "patient_ref": f"{source}-{i}"},
                format="multipart",
            )
        assert response.status_code == 201
        assert Study.objects.get(pk=response.json()["id"]).status == Study.Status.PREDICTED
        api_client.force_authenticate(site_reviewer)
        assert api_client.post(f"/api/studies/{response.json()['id']}/reviews/", {"label": label}).status_code == 201
        ids.append(response.json()["id"])
    return ids


@pytest.mark.django_db
def test_a_new_sites_reviews_trigger_a_retrain_that_fixes_the_site_and_changes_the_served_model(
    api_client, django_capture_on_commit_callbacks, settings
):
    """Site B's scanner inverts the image: the model trained on site A reads it badly. Its reviewed
    studies trigger the nightly retrain, which fine-tunes the active model with site B weighted; the
    gate, judging both on the same frozen cases per source, promotes it, and site B improves."""
    settings.TRAINING = {**settings.TRAINING, "PATIENCE": 30, "FINE_TUNE_EPOCHS": 20}
    _seed(60, "site-a")
    with django_capture_on_commit_callbacks(execute=True):
        first = training_run_create(user=None, trigger="test", hyperparameters={"epochs": 30, "input_size": 32})
    first.refresh_from_db()
    assert first.model_version.metrics["per_source"]["site-a"]["accuracy"] >= 0.8  # site A was learnt
    frozen_test = set(first.snapshot.items.filter(split="test").values_list("study_id", flat=True))

    _upload_and_review(
        api_client, django_capture_on_commit_callbacks, count=45, source="site-b", inverted=True, seed=1000
    )

    # Reviewers corrected the model on site B often: that alone makes the nightly run due.
    assert "predictions for site-b" in retrain_due_reason(min_new_reviews=1000)
    with django_capture_on_commit_callbacks(execute=True):
        second = retrain_if_due(min_new_reviews=1000)
    second.refresh_from_db()
    assert second.status == TrainingRun.Status.SUCCEEDED, second.error
    assert second.trigger == "schedule" and "fine-tuning the active model" in second.log
    step = second.model_version.metrics["fine_tune_step"]  # chosen on validation, against the active model
    assert step in (1.0, 0.75, 0.5) and f"Weights {step:.2f} of the way" in second.log
    assert f"the weights went {step:.2f} of the way" in second.model_version.model_card

    second_test = set(second.snapshot.items.filter(split="test").values_list("study_id", flat=True))
    assert frozen_test <= second_test  # old test cases stay; the new site extends the split
    candidate = second.model_version
    comparison = candidate.metrics["active_comparison"]
    assert comparison["active_name"] == first.model_version.name
    assert comparison["active_metrics"]["n"] == candidate.metrics["n"]  # both scored on the same cases
    before = comparison["active_metrics"]["per_source"]["site-b"]["accuracy"]
    after = candidate.metrics["per_source"]["site-b"]["accuracy"]
    assert after > before + 0.2, (before, after)
    assert "site-b" in candidate.decision_rule["site_bias"]
    assert candidate.gate["promote"] and candidate.gate_decision == candidate.gate["reason"]
    assert {row["scope"] for row in candidate.gate["comparisons"]} == {"overall", "site-a", "site-b"}
    assert ModelVersion.objects.get(is_active=True) == candidate  # the served model changed
    served = api_client.get("/api/models/active/").json()
    assert served["name"] == candidate.name and served["gate"]["promote"]


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
