"""The production path without containers: platform/entrypoint.sh's roles (web, worker-inference,
worker-training, beat) with config.settings.production, on a database of their own on the local
PostgreSQL and a Redis server of their own on a free port (bench/harness.py).

With CI=true this runs and fails if PostgreSQL or redis-server is missing; elsewhere it is skipped
when they are."""

import shutil
import signal

import pytest

from bench.harness import Platform, cxr_images, wait_until
from tests.conftest import CI, _reachable

pytestmark = [
    pytest.mark.roles,
    pytest.mark.skipif(
        not CI and (not _reachable("127.0.0.1", 5432) or shutil.which("redis-server") is None),
        reason="needs PostgreSQL on 127.0.0.1:5432 and redis-server (CI=true makes this a failure)",
    ),
]


@pytest.fixture
def production_roles():
    platform = Platform("production")
    try:
        platform.prepare()
        platform.start()
        yield platform
    finally:
        platform.stop()
        platform.cleanup()


def test_the_entrypoint_roles_predict_an_uploaded_study_and_stop_cleanly_on_sigterm(production_roles):
    platform = production_roles
    status, body = platform.upload(cxr_images(1)[0].read_bytes())
    assert status == 201 and body["status"] == "queued"
    study = f"/api/studies/{body['id']}/"
    wait_until(lambda: b'"status":"predicted"' in platform.get(study), timeout=120, what="the prediction")
    ready = platform.get("/readyz/")
    assert b'"status": "ok"' in ready and b"inference@" in ready and b"training@" in ready

    for role in ("worker-inference", "worker-training", "beat", "web"):
        platform.signal_role(role, signal.SIGTERM)
        assert platform.processes[role].returncode in (0, -signal.SIGTERM), f"{role} did not stop cleanly"
