"""Health endpoints. ``/healthz/`` says the web process answers (cheap: no I/O). ``/readyz/`` checks
what a request needs (database, broker, media) and which workers answer a ping through the broker.

``/readyz/`` answers 503 when the database, the broker or the media folder fails, and 200 otherwise,
with ``"status": "degraded"`` when no worker answered (uploads are stored and wait in the queue)."""

import os
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import JsonResponse


def healthz(request):
    return JsonResponse({"status": "ok"})


def readyz(request):
    checks = {
        "database": _timed(_check_database),
        "broker": _timed(_check_broker),
        "media": _timed(_check_media),
        "workers": _timed(_check_workers),
    }
    required_ok = all(checks[name]["ok"] for name in ("database", "broker", "media"))
    status = "unavailable" if not required_ok else ("ok" if checks["workers"]["ok"] else "degraded")
    return JsonResponse({"status": status, "checks": checks}, status=200 if required_ok else 503)


def _timed(check: Callable[[], dict]) -> dict:
    started = time.perf_counter()
    try:
        result = {"ok": True, **check()}
    except Exception as exc:  # each check reports its own failure; the endpoint never 500s
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def _check_database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {}


def _check_broker() -> dict:
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT)
        return {"transport": conn.transport_cls}


def _check_media() -> dict:
    root = str(settings.MEDIA_ROOT)
    if not os.path.isdir(root) or not os.access(root, os.W_OK):
        raise OSError(f"media folder {root} is missing or not writable")
    return {}


def _check_workers() -> dict:
    from config.celery import app

    replies = app.control.ping(timeout=1.0)
    names = sorted(name for reply in replies for name in reply)
    if not names:
        raise RuntimeError("no worker answered a ping through the broker")
    return {"live": names}
