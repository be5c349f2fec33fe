"""Health endpoints and the worker liveness check."""

import pytest

from config.celery import worker_consumes
from tests.conftest import CI, redis_available

needs_redis = pytest.mark.skipif(not CI and not redis_available(), reason="Redis is not running on 127.0.0.1:6379")


@pytest.mark.django_db
def test_healthz_answers_without_touching_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz/")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_answers_503_naming_the_broker_when_it_is_down(client, broker_down, media_root):
    media_root.mkdir(parents=True, exist_ok=True)
    response = client.get("/readyz/")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] and body["checks"]["media"]["ok"]
    assert not body["checks"]["broker"]["ok"] and body["checks"]["broker"]["error"]


@needs_redis
@pytest.mark.django_db
def test_readyz_answers_200_when_database_broker_and_media_are_up_and_says_which_workers_answer(client, media_root):
    media_root.mkdir(parents=True, exist_ok=True)
    response = client.get("/readyz/")
    assert response.status_code == 200
    body = response.json()
    assert all(body["checks"][name]["ok"] for name in ("database", "broker", "media"))
    workers = body["checks"]["workers"]
    # Other test runs may share this Redis: no worker (degraded) or some, each named.
    assert (body["status"], workers["ok"]) in {("degraded", False), ("ok", True)}
    assert workers.get("live") or workers.get("error")


@needs_redis
def test_liveness_says_no_for_a_worker_that_does_not_answer_through_a_reachable_broker():
    assert worker_consumes("nobody@nowhere", timeout=0.5) is False


def test_liveness_does_not_blame_a_worker_for_an_unreachable_broker(broker_down):
    assert worker_consumes("inference@anywhere", timeout=0.5) is None
