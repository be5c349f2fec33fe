#!/usr/bin/env bash
# Container entrypoint: one image, one sub-command per role.
#   web               wait for the database, migrate, serve with gunicorn
#   worker-inference  Celery worker on the "inference" queue
#   worker-training   Celery worker on the "training" queue (one run at a time)
#   beat              Celery beat with the database scheduler
#   bootstrap         python manage.py bootstrap (one-shot)
#   healthcheck [P]   exit 0 when the web process answers P with 200 (default /healthz/;
#                     the compose check uses /readyz/: database, broker and media)
#   worker-liveness Q exit 0 when the worker Q@$HOSTNAME (inference, training) answers a ping
#                     through the broker: it is alive and still consuming
#   anything else     exec'd as is (e.g. "python manage.py shell")
set -euo pipefail

cd "$(dirname "$0")/.."

log() { echo "entrypoint: $*" >&2; }

# Retry a command until it succeeds or the timeout (seconds) passes; show its last error.
retry_until() {
    local what="$1" timeout="$2"
    shift 2
    local deadline=$((SECONDS + timeout)) out
    until out="$("$@" 2>&1)"; do
        if ((SECONDS >= deadline)); then
            log "gave up waiting for ${what} after ${timeout}s:"
            echo "${out}" >&2
            exit 1
        fi
        log "waiting for ${what}..."
        sleep 2
    done
}

# Only opens a connection: an error in the code fails once, later, with its own traceback.
wait_for_db() {
    retry_until "the database" "${DB_WAIT_TIMEOUT:-60}" \
        python -c 'import django; django.setup(); from django.db import connection; connection.ensure_connection()'
}

# Workers and beat need the tables the web container's migrate creates.
wait_for_migrations() {
    retry_until "migrations to be applied" "${MIGRATIONS_WAIT_TIMEOUT:-300}" python manage.py migrate --check
}

CELERY_LOG_LEVEL="${CELERY_LOG_LEVEL:-info}"

cmd="${1:-web}"
if [[ $# -gt 0 ]]; then
    shift
fi

case "${cmd}" in
    web)
        wait_for_db
        if [[ "${RUN_MIGRATIONS:-true}" == "true" ]]; then
            python manage.py migrate --noinput
        fi
        exec gunicorn -c platform/gunicorn.conf.py config.wsgi "$@"
        ;;
    worker-inference)
        # Without gossip and mingle (unused here): restarting them after a broker outage is where
        # workers were seen to fail ("Error on restarting Gossip", then no more consuming).
        wait_for_migrations
        # One process per core by default; each holds the active model and takes micro-batches, and
        # runs TensorFlow on one thread (INFERENCE_TF_THREADS): with a process per core, TensorFlow's
        # own pools per process oversubscribed the cores (bench/throughput.py production: 43-46 ->
        # 53 images/s, worker CPU 20-22 -> 17 ms per image).
        export TF_NUM_INTRAOP_THREADS="${INFERENCE_TF_THREADS:-1}" TF_NUM_INTEROP_THREADS="${INFERENCE_TF_THREADS:-1}"
        exec celery -A config worker -Q inference,repredict -c "${INFERENCE_CONCURRENCY:-$(nproc)}" -n "inference@%h" \
            --prefetch-multiplier 1 -O fair --without-gossip --without-mingle --loglevel "${CELERY_LOG_LEVEL}" "$@"
        ;;
    worker-training)
        wait_for_migrations
        exec celery -A config worker -Q training -c 1 -n "training@%h" \
            --prefetch-multiplier 1 --without-gossip --without-mingle --loglevel "${CELERY_LOG_LEVEL}" "$@"
        ;;
    beat)
        wait_for_migrations
        exec celery -A config beat --scheduler django_celery_beat.schedulers:DatabaseScheduler \
            --loglevel "${CELERY_LOG_LEVEL}" "$@"
        ;;
    bootstrap)
        wait_for_migrations
        exec python manage.py bootstrap "$@"
        ;;
    worker-liveness)
        # The reply comes from the worker's consumer loop: a worker that is alive but no longer
        # consumes (seen after broker restarts) fails this, and its own watchdog makes it exit.
        exec celery -A config inspect ping -d "${1:-inference}@$(hostname)" --timeout "${WORKER_PING_TIMEOUT:-5}"
        ;;
    healthcheck)
        # Sends a Host from ALLOWED_HOSTS and X-Forwarded-Proto: https from 127.0.0.1 (gunicorn trusts
        # it from FORWARDED_ALLOW_IPS), so host validation and SECURE_SSL_REDIRECT let it through.
        HEALTH_PATH="${1:-/healthz/}" exec python - <<'PY'
import os
import sys
import urllib.request

hosts = [h.strip().lstrip(".") for h in os.environ.get("ALLOWED_HOSTS", "").split(",")]
host = next((h for h in hosts if h and "*" not in h), "localhost")
request = urllib.request.Request(
    f"http://127.0.0.1:{os.environ.get('PORT', '8000')}{os.environ['HEALTH_PATH']}",
    headers={"Host": host, "X-Forwarded-Proto": "https"},
)
try:
    with urllib.request.urlopen(request, timeout=5) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:
    print(f"healthcheck failed: {exc}", file=sys.stderr)
    sys.exit(1)
PY
        ;;
    *)
        exec "${cmd}" "$@"
        ;;
esac
