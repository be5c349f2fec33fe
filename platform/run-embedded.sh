#!/usr/bin/env bash
# The embedded platform for `make run`: web (gunicorn), one Celery worker (both queues) and
# Celery beat, on SQLite and Celery's filesystem broker. Ctrl-C stops all three.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT=${PORT:-8000}
export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-config.settings.base}

pids=()
stop() {
    trap - INT TERM EXIT
    echo "Stopping web, worker and beat ..."
    kill -TERM "${pids[@]}" 2>/dev/null
    wait "${pids[@]}" 2>/dev/null
}
trap stop INT TERM EXIT

# Two processes: a long training run (queue "training") never blocks predictions (queue "inference").
$BIN/celery -A config worker -Q inference,repredict,training --concurrency 2 --prefetch-multiplier 1 -O fair \
    --loglevel INFO -n embedded@%h &
pids+=($!)
$BIN/celery -A config beat --loglevel INFO &
pids+=($!)
$BIN/gunicorn -c platform/gunicorn.conf.py --bind "127.0.0.1:${PORT}" config.wsgi &
pids+=($!)

sleep 2
cat <<MSG

  CXR study platform is running:  http://127.0.0.1:${PORT}/
  API docs: http://127.0.0.1:${PORT}/api/docs/   Admin: http://127.0.0.1:${PORT}/admin/
  Demo users are listed above.  Ctrl-C stops web, worker and beat.

MSG
# If one of the three dies, stop the others too.
wait -n "${pids[@]}"
