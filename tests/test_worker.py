"""A real Celery worker process on Redis predicts an uploaded study.

With CI=true Redis must be up (the session fails at start otherwise); on a developer
machine without Redis this one test is skipped.
"""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from config.celery import app
from studies.models import Study
from studies.tasks import study_predict_task
from tests.conftest import CI, redis_available
from tests.images import png_bytes

pytestmark = [
    pytest.mark.worker,
    pytest.mark.skipif(not CI and not redis_available(), reason="Redis is not running on 127.0.0.1:6379"),
]
ROOT = Path(__file__).resolve().parent.parent
# A queue of this run's own: other checkouts' test workers on the same Redis never take its messages.
QUEUE = f"inference-test-{uuid.uuid4().hex[:12]}"


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def worker(media_root):
    """`celery worker` in its own process, on the test database, media and broker."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": _database_url(),
        "MEDIA_ROOT": str(media_root),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", QUEUE, "-P", "solo",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = False
    yield process
    app.conf.task_always_eager = previous
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_predicts_an_uploaded_study(worker, api_client, active_model):
    from tests.factories import uploader

    api_client.force_authenticate(uploader())
    response = api_client.post("/api/studies/", {"image": SimpleUploadedFile("x.png", png_bytes())}, format="multipart")
    assert response.status_code == 201
    study_id = response.json()["id"]

    # The upload's own message went to the shared "inference" queue; this one goes to the worker's own
    # queue and returns once the prediction exists (the task is idempotent).
    assert study_predict_task.apply_async((study_id,), queue=QUEUE).get(timeout=180) == "done"
    assert worker.poll() is None
    body = api_client.get(f"/api/studies/{study_id}/").json()
    assert body["status"] == Study.Status.PREDICTED
    assert sum(body["prediction"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["prediction"]["model_version"] == active_model.name
