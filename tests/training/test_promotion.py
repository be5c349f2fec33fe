"""The promotion gate and the model registry."""

import pytest

from tests.factories import ModelVersionFactory, UserFactory
from training.models import ModelActivation, ModelVersion
from training.services import model_version_promote, promotion_decision


def metrics(auc: float | None, covid_sensitivity: float | None = 0.8, at95: float | None = 0.5) -> dict:
    return {
        "macro_auc": auc,
        "covid_sensitivity_at_95_specificity": at95,
        "per_class": {"covid": {"sensitivity": covid_sensitivity}},
    }


def test_the_first_model_is_promoted():
    assert promotion_decision(candidate=metrics(0.6), active=None).promote


def test_a_better_macro_auc_is_promoted():
    decision = promotion_decision(candidate=metrics(0.9), active=metrics(0.8))
    assert decision.promote and "improved from 0.800 to 0.900" in decision.reason


def test_a_worse_macro_auc_is_kept_as_candidate():
    decision = promotion_decision(candidate=metrics(0.7), active=metrics(0.8))
    assert not decision.promote and "does not beat" in decision.reason


def test_a_better_auc_that_loses_covid_sensitivity_beyond_tolerance_is_refused():
    decision = promotion_decision(candidate=metrics(0.95, covid_sensitivity=0.6), active=metrics(0.8, 0.8))
    assert not decision.promote and "COVID sensitivity would drop from 0.800 to 0.600" in decision.reason


def test_a_small_covid_sensitivity_loss_within_tolerance_is_allowed(settings):
    settings.PROMOTION = {**settings.PROMOTION, "COVID_SENSITIVITY_TOLERANCE": 0.05}
    assert promotion_decision(candidate=metrics(0.9, 0.77), active=metrics(0.8, 0.8)).promote


def test_a_tie_is_broken_by_covid_sensitivity_at_95_specificity():
    assert promotion_decision(candidate=metrics(0.801, at95=0.7), active=metrics(0.8, at95=0.5)).promote
    refused = promotion_decision(candidate=metrics(0.801, at95=0.4), active=metrics(0.8, at95=0.5))
    assert not refused.promote and "tied" in refused.reason


def test_an_undefined_candidate_metric_is_refused():
    assert not promotion_decision(candidate=metrics(None), active=metrics(0.8)).promote


@pytest.mark.django_db
def test_promotion_deactivates_the_previous_version_and_logs_who_and_why():
    old, new = ModelVersionFactory(), ModelVersionFactory()
    admin = UserFactory(is_staff=True)
    model_version_promote(model_version=old, user=None, reason="first")
    model_version_promote(model_version=new, user=admin, reason="rolled forward")
    old.refresh_from_db()
    assert ModelVersion.objects.get(is_active=True) == new
    assert old.status == ModelVersion.Status.RETIRED
    log = ModelActivation.objects.first()
    assert (log.model_version, log.previous, log.activated_by, log.reason) == (new, old, admin, "rolled forward")


@pytest.mark.django_db
def test_staff_roll_back_through_the_api_and_others_are_refused(api_client):
    old, new = ModelVersionFactory(), ModelVersionFactory()
    model_version_promote(model_version=old, user=None, reason="first")
    model_version_promote(model_version=new, user=None, reason="second")
    api_client.force_authenticate(UserFactory())
    assert api_client.post(f"/api/models/{old.id}/promote/", {"reason": "no"}).status_code == 403
    api_client.force_authenticate(UserFactory(is_staff=True))
    response = api_client.post(f"/api/models/{old.id}/promote/", {"reason": "new one misses adult COVID"})
    assert response.status_code == 200 and response.json()["is_active"]
    assert api_client.get("/api/models/active/").json()["name"] == old.name
    assert "new one misses adult COVID" in ModelActivation.objects.first().reason


@pytest.mark.django_db
def test_active_model_endpoint_returns_404_when_none_is_active(api_client):
    api_client.force_authenticate(UserFactory())
    assert api_client.get("/api/models/active/").status_code == 404
