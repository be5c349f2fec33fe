"""The Celery app: reads the CELERY_* Django settings, finds each app's tasks.py; and the worker
watchdog, which ends a worker that is alive but no longer consuming so that its supervisor (compose's
restart policy, `make run`'s run-embedded.sh) starts a fresh one."""

import logging
import os
import threading

from celery import Celery
from celery.signals import task_prerun, worker_ready, worker_shutting_down

import config.broker  # noqa: F401 - registers the cxrfs:// transport (make run's broker) in every process

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow: warnings and errors only

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

logger = logging.getLogger(__name__)
WATCHDOG_EXIT_CODE = 70
_stopping = threading.Event()


def _dispatch_errors() -> tuple[type[BaseException], ...]:
    """What a publish raises while the broker is unreachable: kombu's own errors, socket errors and
    the transport client's (redis-py raises its ConnectionError on a stale pooled connection)."""
    from kombu.exceptions import KombuError

    connection = app.connection_for_write()
    return (KombuError, OSError, *connection.connection_errors, *connection.channel_errors)


def task_send(task, *args: object) -> bool:
    """Publish ``task(*args)``; False, with a warning logged, while the broker is unreachable (the
    caller says what that means for its row). No result is awaited: the rows hold the state, and
    the Redis result backend would first open a subscription, which fails on its own while the
    broker restarts."""
    try:
        task.apply_async(args, ignore_result=True)
    except _dispatch_errors():
        logger.warning("Broker unreachable: %s%r was not sent", task.name, args, exc_info=True)
        return False
    return True


def worker_consumes(hostname: str, *, timeout: float) -> bool | None:
    """Ping one worker through the broker. The reply comes from the worker's consumer loop, the
    one that also takes tasks, so an answer proves it consumes. None: the broker is unreachable
    (not the worker's fault; it reconnects by itself)."""
    try:
        replies = app.control.ping(destination=[hostname], timeout=timeout)
    except Exception:  # kombu and redis raise many types while the broker is down
        return None
    return any(hostname in reply for reply in replies)


def _watch(hostname: str, interval: float, misses_allowed: int, timeout: float) -> None:
    misses = 0
    while not _stopping.wait(interval):
        answered = worker_consumes(hostname, timeout=timeout)
        if answered is None:
            continue
        misses = 0 if answered else misses + 1
        if misses >= misses_allowed:
            logger.critical(
                "Worker %s answered no ping through a reachable broker %s times in a row: it no longer "
                "consumes. Exiting (code %s) so that its supervisor starts a fresh one; unacknowledged "
                "messages return to the queue and the requeue job brings back studies it held.",
                hostname,
                misses,
                WATCHDOG_EXIT_CODE,
            )
            logging.shutdown()
            os._exit(WATCHDOG_EXIT_CODE)


@worker_ready.connect
def start_worker_watchdog(sender=None, **kwargs) -> None:
    from django.conf import settings

    interval = settings.WORKER_WATCHDOG_INTERVAL
    if interval <= 0 or sender is None:
        return
    args = (sender.hostname, interval, settings.WORKER_WATCHDOG_MISSES, settings.WORKER_PING_TIMEOUT)
    threading.Thread(target=_watch, args=args, name="worker-watchdog", daemon=True).start()


@worker_shutting_down.connect
def stop_worker_watchdog(**kwargs) -> None:
    _stopping.set()


@task_prerun.connect
def database_connections_checked(task=None, **kwargs) -> None:
    """Before each task: close a connection that is past CONN_MAX_AGE or that an error broke, as Django
    does before each request, and one that no longer answers (a database restarted while the worker
    waited: on PostgreSQL one ``SELECT 1``), so the task starts on a working connection. Healthy ones
    are kept (CELERY_DB_REUSE_MAX stops Celery from closing them all, which cost a new connection,
    a new PostgreSQL backend, per task). Eager tasks run inside their caller's transaction: left alone."""
    if task is not None and task.request.is_eager:
        return
    from django.db import close_old_connections, connections

    close_old_connections()
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None and not connection.is_usable():
            connection.close()
