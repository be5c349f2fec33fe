"""Gunicorn settings for the web container, read from the environment.

Web requests never import TensorFlow (inference runs in Celery workers), so the
sync workers are light and a few of them serve a study site well.
"""

import os


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _default_workers() -> int:
    # sched_getaffinity honours the container's CPU set; cpu_count() would see the host.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(2 * cores + 1, 4)


bind = f"0.0.0.0:{_env_int('PORT', 8000)}"
# WEB_CONCURRENCY unset, empty or 0: automatic.
workers = _env_int("WEB_CONCURRENCY", 0) or _default_workers()
# GUNICORN_THREADS > 1: threaded workers (gthread), which overlap database waits within a worker.
threads = _env_int("GUNICORN_THREADS", 1)
worker_class = "gthread" if threads > 1 else "sync"
timeout = _env_int("GUNICORN_TIMEOUT", 60)
graceful_timeout = 30
keepalive = 5

# Recycle workers now and then; the jitter keeps them from restarting together.
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 1000)
max_requests_jitter = _env_int("GUNICORN_MAX_REQUESTS_JITTER", 100)

# Only these proxies may set X-Forwarded-* (comma-separated IPs/networks, "*" for any).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# Logs to stdout/stderr for the container runtime; access log lines carry no request bodies.
accesslog = None if os.environ.get("GUNICORN_ACCESS_LOG", "true").lower() == "false" else "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# Heartbeat files in memory, not on the container's overlay filesystem.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# The control socket is not used in containers.
control_socket_disable = True
