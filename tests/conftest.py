import os
import shutil
import socket
from pathlib import Path

import pytest
from django.core.files import File

from config.celery import app
from tests import factories

CI = os.environ.get("CI", "").lower() == "true"
MODEL_CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "cxr-test-model"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def pytest_sessionstart(session: pytest.Session) -> None:
    """With CI=true the suite needs the real PostgreSQL and Redis: fail at once, never skip."""
    if not CI:
        return
    down = [name for name, port in (("PostgreSQL", 5432), ("Redis", 6379)) if not _reachable("127.0.0.1", port)]
    if down:
        pytest.exit(f"CI=true but {' and '.join(down)} unreachable on 127.0.0.1; start them (see README).", 1)


def redis_available() -> bool:
    return _reachable("127.0.0.1", 6379)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path: Path) -> Path:
    """Each test writes files into its own folder, so 'no file left behind' can be checked."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return Path(settings.MEDIA_ROOT)


@pytest.fixture(autouse=True)
def empty_cache():
    """Throttle counters live in the cache: every test starts without any."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """A real (untrained) small_cnn at 32 px from the production builder, saved once per session."""
    path = MODEL_CACHE / "tiny-small_cnn-32.keras"
    if not path.exists():
        from training.architectures import build_model

        path.parent.mkdir(parents=True, exist_ok=True)
        model = build_model(backbone="small_cnn", input_size=32, class_names=["covid", "normal", "pneumonia"])
        tmp = path.with_suffix(".tmp.keras")
        model.save(tmp)
        shutil.move(tmp, path)
    return path


@pytest.fixture
def active_model(db, tiny_model_path: Path):
    """An active model version whose artifact is a real Keras model."""
    from training.services import model_version_promote

    with tiny_model_path.open("rb") as handle:
        version = factories.ModelVersionFactory(artifact=File(handle, name="tiny.keras"))
    return model_version_promote(model_version=version, user=None, reason="test setup")


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def reviewer_user(db):
    return factories.reviewer()


@pytest.fixture
def uploader_user(db):
    return factories.uploader()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def broker_down():
    """The real Celery client publishing to a Redis port where nothing listens."""
    previous = app.conf.broker_url, app.conf.task_always_eager
    app.conf.broker_url = f"redis://127.0.0.1:{closed_port()}/0"
    app.conf.task_always_eager = False
    _reset_connections()
    yield
    app.conf.broker_url, app.conf.task_always_eager = previous
    _reset_connections()


def _reset_connections() -> None:
    app._pool = None
    app.amqp._producer_pool = None
