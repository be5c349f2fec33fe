"""Gunicorn settings for the web container, read from the environment.

Web requests never import TensorFlow (inference runs in Celery workers), so the
sync workers are light; their number and kind come from bench/load.py (README,
"Throughput and reliability").
"""

import os


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _default_workers() -> int:
    """One sync worker per core. With PostgreSQL on the same 2 cores, bench/load.py (20 clients,
    interleaved runs) gave 2 workers a median of 193 requests/s (p95 115 ms), 3 175 (130 ms) and 4
    165 (the old default, min(2 x cores + 1, 4)): more processes than cores cost CPU in switches and
    caches. Threads lost (2 x 2: p95 241 ms). With the database on another machine a request waits on
    the network and more workers may pay: measure with --web-concurrency, set WEB_CONCURRENCY."""
    # sched_getaffinity honours the container's CPU set; cpu_count() would see the host.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores


bind = f"0.0.0.0:{_env_int('PORT', 8000)}"
# WEB_CONCURRENCY unset or 0: automatic (empty: gunicorn itself refuses it, before reading this file).
workers = _env_int("WEB_CONCURRENCY", 0) or _default_workers()
# GUNICORN_THREADS > 1: threaded workers (gthread), which overlap database waits within a worker
# (slower here: the GIL serializes the Python that is most of a request).
threads = _env_int("GUNICORN_THREADS", 1)
worker_class = "gthread" if threads > 1 else "sync"
timeout = _env_int("GUNICORN_TIMEOUT", 60)
graceful_timeout = 30
keepalive = 5

# Recycle workers now and then; the jitter keeps them from restarting together. A worker's memory
# stays flat (bench/load.py: ~180 MiB after its first few thousand requests), and at 1,000 requests a
# worker lived 20 s under load and each restart cost throughput (145 against 156 requests/s over
# 70 s, 3 workers on 2 cores): 20,000 is minutes at full load, hours on a normal day.
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 20_000)
max_requests_jitter = _env_int("GUNICORN_MAX_REQUESTS_JITTER", 2_000)
# The application is imported once, by the master, and workers are forked from it: a recycled
# worker then costs a fork, not the ~2 s of CPU that importing Django, DRF, Celery and the
# scientific stack takes on 2 cores (GET /healthz/ at 20 clients, a worker recycled every few
# seconds: 634 -> 1,010 requests/s). The import opens no database connection and starts no thread.
# SIGHUP restarts the workers on the same code: a new release means a new master (a container restart).
preload_app = True

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
