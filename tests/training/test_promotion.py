"""The model registry: every activation goes through the gate, on stored per-case results."""

import pytest
from django.core.exceptions import ValidationError

from tests.factories import ModelVersionFactory, UserFactory, ml_lead, reviewer, score_cases
from training.models import DatasetSnapshot, ModelActivation, ModelVersion
from training.services import model_version_promote
from training.services.evaluations import evaluation_metrics


@pytest.fixture
def snapshot(db) -> DatasetSnapshot:
    return DatasetSnapshot.objects.create(content_hash="x" * 64)


def _active_and_candidate(snapshot, *, active_correct: int, candidate_correct: int) -> tuple:
    """An active version and a candidate on ``snapshot``, both scored on its 30 test cases."""
    old = ModelVersionFactory()
    model_version_promote(model_version=old, user=None, reason="first")
    candidate = ModelVersionFactory(snapshot=snapshot)
    score_cases(old, snapshot, correct=active_correct)
    score_cases(candidate, snapshot, correct=candidate_correct)
    return old, candidate


@pytest.mark.django_db
def test_the_first_version_is_activated_and_the_log_keeps_who_why_and_the_gate():
    version = ModelVersionFactory()
    model_version_promote(model_version=version, user=None, reason="first")
    log = ModelActivation.objects.get()
    assert (log.model_version, log.previous, log.reason, log.override) == (version, None, "first", False)
    assert log.gate_reason.startswith("No active model")


@pytest.mark.django_db
def test_a_better_version_on_the_same_cases_is_promoted_and_the_old_one_retired(snapshot):
    old, new = _active_and_candidate(snapshot, active_correct=15, candidate_correct=30)
    admin = ml_lead()
    model_version_promote(model_version=new, user=admin, reason="rolled forward")
    old.refresh_from_db()
    assert ModelVersion.objects.get(is_active=True) == new and old.status == ModelVersion.Status.RETIRED
    log = ModelActivation.objects.first()
    assert (log.previous, log.activated_by, log.override) == (old, admin, False)
    assert log.gate_reason.startswith("Better: ")


@pytest.mark.django_db
def test_a_worse_version_is_refused_and_the_active_model_stays(snapshot):
    old, worse = _active_and_candidate(snapshot, active_correct=30, candidate_correct=20)
    with pytest.raises(ValidationError, match="The promotion gate refuses"):
        model_version_promote(model_version=worse, user=None, reason="try")
    assert ModelVersion.objects.get(is_active=True) == old
    assert ModelActivation.objects.count() == 1


@pytest.mark.django_db
def test_an_override_needs_a_written_reason_and_is_logged_as_one(snapshot):
    _, worse = _active_and_candidate(snapshot, active_correct=30, candidate_correct=20)
    with pytest.raises(ValidationError, match="written reason"):
        model_version_promote(model_version=worse, user=None, reason=" ", override=True)
    model_version_promote(model_version=worse, user=None, reason="site lead: new scanner", override=True)
    log = ModelActivation.objects.first()
    assert log.override and log.reason == "site lead: new scanner" and "Not shown non-inferior" in log.gate_reason


@pytest.mark.django_db
def test_a_version_never_compared_with_the_active_one_needs_an_override(snapshot):
    old, other = ModelVersionFactory(), ModelVersionFactory(snapshot=snapshot)
    model_version_promote(model_version=old, user=None, reason="first")
    score_cases(other, snapshot, correct=30)
    with pytest.raises(ValidationError, match="was not scored on"):
        model_version_promote(model_version=other, user=None, reason="no comparison")


@pytest.mark.django_db
def test_a_version_judged_on_an_empty_test_split_is_refused_saying_so(snapshot):
    old, other = ModelVersionFactory(), ModelVersionFactory(snapshot=snapshot)
    model_version_promote(model_version=old, user=None, reason="first")
    with pytest.raises(ValidationError, match="The test split is empty"):
        model_version_promote(model_version=other, user=None, reason="no test cases")


@pytest.mark.django_db
def test_metrics_are_recomputed_from_the_stored_cases(snapshot):
    version = ModelVersionFactory(snapshot=snapshot)
    score_cases(version, snapshot, correct=24)
    metrics = evaluation_metrics(version=version, snapshot=snapshot)
    assert metrics["n"] == 30 and metrics["accuracy"] == pytest.approx(0.8)
    assert sum(map(sum, metrics["confusion_matrix"])) == 30


@pytest.mark.django_db
def test_a_roll_back_through_the_api_is_refused_by_the_gate_unless_staff_override_it(api_client, snapshot):
    old, new = _active_and_candidate(snapshot, active_correct=15, candidate_correct=30)
    model_version_promote(model_version=new, user=None, reason="second")
    # The roll-back candidate is judged on its own snapshot's test split; give it the newer one.
    ModelVersion.objects.filter(pk=old.pk).update(snapshot=snapshot)

    api_client.force_authenticate(UserFactory())
    assert api_client.post(f"/api/models/{old.id}/promote/", {"reason": "no"}).status_code == 403
    api_client.force_authenticate(ml_lead())
    refused = api_client.post(f"/api/models/{old.id}/promote/", {"reason": "new one misses adult COVID"})
    assert refused.status_code == 400 and "promotion gate refuses" in str(refused.json())
    assert api_client.get("/api/models/active/").json()["name"] == new.name
    response = api_client.post(
        f"/api/models/{old.id}/promote/", {"reason": "new one misses adult COVID", "override": True}, format="json"
    )
    assert response.status_code == 200 and response.json()["is_active"]
    log = ModelActivation.objects.first()
    assert log.override and "new one misses adult COVID" in log.reason


@pytest.mark.django_db
def test_active_model_endpoint_returns_404_when_none_is_active(api_client):
    api_client.force_authenticate(reviewer())
    assert api_client.get("/api/models/active/").status_code == 404


@pytest.mark.django_db
def test_an_override_through_the_api_is_judged_on_the_readers_own_words(api_client, snapshot):
    old, worse = _active_and_candidate(snapshot, active_correct=30, candidate_correct=20)
    api_client.force_authenticate(ml_lead())
    response = api_client.post(f"/api/models/{worse.id}/promote/", {"reason": "x", "override": True}, format="json")
    assert response.status_code == 400 and "written reason" in str(response.json())
    assert ModelVersion.objects.get(is_active=True) == old


@pytest.mark.django_db(transaction=True)  # the commit hook runs, as in production (a flushed database: no groups)
def test_a_promotion_stands_when_the_broker_cannot_take_the_re_prediction(api_client, monkeypatch):
    from kombu.exceptions import OperationalError

    from studies.tasks import repredict_unreviewed_task

    def unreachable(*args, **kwargs):
        raise OperationalError("Connection refused.")

    monkeypatch.setattr(repredict_unreviewed_task, "apply_async", unreachable)
    version = ModelVersionFactory()
    api_client.force_authenticate(UserFactory(is_superuser=True))
    response = api_client.post(f"/api/models/{version.id}/promote/", {"reason": "first model"}, format="json")
    assert response.status_code == 200 and response.json()["is_active"]


@pytest.mark.django_db(transaction=True)
def test_two_promotions_at_once_are_judged_one_after_the_other(monkeypatch):
    import threading
    import time

    from django.db import connection

    from training.services import registry

    if connection.vendor != "postgresql":
        pytest.skip("SQLite queues writers; the race needs PostgreSQL's row locks (CI=true)")
    snapshot = DatasetSnapshot.objects.create(content_hash="y" * 64)
    old = ModelVersionFactory()
    model_version_promote(model_version=old, user=None, reason="first")
    first, second = ModelVersionFactory(snapshot=snapshot), ModelVersionFactory(snapshot=snapshot)
    for version, correct in ((old, 15), (first, 30), (second, 30)):
        score_cases(version, snapshot, correct=correct)
    gate = registry.model_version_gate

    def slow_gate(**kwargs):
        decision = gate(**kwargs)
        time.sleep(0.5)  # the first promotion holds its transaction open while the second arrives
        return decision

    monkeypatch.setattr(registry, "model_version_gate", slow_gate)
    errors = []

    def promote(version):
        try:
            model_version_promote(model_version=version, user=None, reason="at once")
        except Exception as exc:  # the failure this test is about: an IntegrityError (a 500)
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=promote, args=(version,)) for version in (first, second)]
    threads[0].start()
    time.sleep(0.2)
    threads[1].start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert list(ModelVersion.objects.filter(is_active=True)) == [second]
    log = ModelActivation.objects.order_by("-pk").first()
    assert log.previous == first  # judged against the version the first promotion activated
