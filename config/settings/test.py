"""Test settings.

With CI=true the suite runs on the real PostgreSQL and Redis at 127.0.0.1 (or the
URLs given in the environment) and fails, never skips, when they are down.
"""

import os
import tempfile

from config.settings.base import *  # noqa: F403
from config.settings.base import TRAINING, env

CI = env.bool("CI", default=False)

if CI:
    DATABASES = {"default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/cxr")}
    CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/15")
else:
    # A file-backed test database, so that a worker process started by a test sees it.
    DATABASES["default"]["TEST"] = {"NAME": os.path.join(tempfile.gettempdir(), "cxr-test.sqlite3")}
    CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/15")
CELERY_RESULT_BACKEND = CELERY_BROKER_URL
CELERY_BROKER_TRANSPORT_OPTIONS = {}

MEDIA_ROOT = env("MEDIA_ROOT", default=tempfile.mkdtemp(prefix="cxr-test-media-"))
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SECRET_KEY = "test-only"
DEIDENTIFICATION_KEY = "test-only-deidentification"
DEBUG = False

TRAINING = {
    **TRAINING,
    "INPUT_SIZE": 32,
    "EPOCHS": 2,
    "FINE_TUNE_EPOCHS": 2,
    "BATCH_SIZE": 8,
    "PATIENCE": 2,
    "BOOTSTRAP_ROUNDS": 20,
}

# Tasks run inline unless a test starts a real worker (tests/test_worker.py).
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
STATIC_ROOT = tempfile.mkdtemp(prefix="cxr-test-static-")
