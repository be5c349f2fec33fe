#!/usr/bin/env bash
# The embedded platform for `make run`: web (gunicorn), one Celery worker (both queues) and
# Celery beat, on SQLite and Celery's filesystem broker. Ctrl-C (or SIGTERM) stops all three.
#
# A small supervisor: a worker that exits (its watchdog ends it when it stops consuming, or it
# crashed) is started again; a worker that no longer answers `celery inspect ping` through the
# broker LIVENESS_MISSES times in a row is stopped and started again. If web or beat dies, all stop.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT=${PORT:-8000}
export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-config.settings.base}
LIVENESS_INTERVAL=${LIVENESS_INTERVAL:-60}   # seconds between external pings of the worker
LIVENESS_MISSES=${LIVENESS_MISSES:-3}
STOP_TIMEOUT=${STOP_TIMEOUT:-30}             # seconds a process gets to stop before SIGKILL
# One inference process per core (at least 2: training has a process of its own to use).
CONCURRENCY=${WORKER_CONCURRENCY:-$(nproc 2>/dev/null || echo 2)}
((CONCURRENCY < 2)) && CONCURRENCY=2
WORKER_NAME="embedded@$(hostname)"
# Web workers: gunicorn.conf.py's one per core (WEB_CONCURRENCY overrides). Four were kept here while an
# upload waited on SQLite and on files; since the upload writes one file, 2 workers on 2 cores do
# better: bench/throughput.py --mode embedded (200 uploads by 4 clients), two interleaved pairs of
# runs: 113.0 and 115.1 images/s with 2 (7.0-7.1 ms of web CPU per upload) against 98.8 and 96.9 with 4;
# three more runs with 2: 102.4, 96.5 and 101.6.
# An empty value would stop gunicorn itself (it reads the variable as a number before its config file).
[[ -z "${WEB_CONCURRENCY:-}" ]] && unset WEB_CONCURRENCY

worker_pid="" beat_pid="" web_pid=""
log() { echo "run-embedded: $*" >&2; }

start_worker() {
    # -O fair with prefetch 1: a long training run (queue "training") never blocks predictions.
    $BIN/celery -A config worker -Q inference,repredict,training --concurrency "${CONCURRENCY}" --prefetch-multiplier 1 \
        -O fair --without-gossip --without-mingle --loglevel INFO -n "${WORKER_NAME}" &
    worker_pid=$!
}

# TERM, wait up to STOP_TIMEOUT, then KILL: a stop never hangs.
stop_pids() {
    local pids=("$@") deadline=$((SECONDS + STOP_TIMEOUT))
    kill -TERM "${pids[@]}" 2>/dev/null
    while ((SECONDS < deadline)); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "${pid}" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.2
    done
    kill -KILL "${pids[@]}" 2>/dev/null
    wait "${pids[@]}" 2>/dev/null
}

stop() {
    trap - INT TERM EXIT
    log "stopping web, worker and beat ..."
    stop_pids ${worker_pid:+"${worker_pid}"} ${beat_pid:+"${beat_pid}"} ${web_pid:+"${web_pid}"}
    exit 0
}
trap stop INT TERM EXIT

start_worker
$BIN/celery -A config beat --loglevel INFO &
beat_pid=$!
$BIN/gunicorn -c platform/gunicorn.conf.py --bind "127.0.0.1:${PORT}" config.wsgi &
web_pid=$!

sleep 2
cat <<MSG

  CXR study platform is running:  http://127.0.0.1:${PORT}/
  API docs: http://127.0.0.1:${PORT}/api/docs/   Admin: http://127.0.0.1:${PORT}/admin/
  Demo users are listed above.  Ctrl-C stops web, worker and beat.

MSG

misses=0
next_ping=$((SECONDS + LIVENESS_INTERVAL))
while true; do
    sleep 1 &
    wait $! # interruptible: Ctrl-C is handled at once
    for pid in "${web_pid}" "${beat_pid}"; do
        if ! kill -0 "${pid}" 2>/dev/null; then
            log "web or beat exited; stopping the others"
            stop
        fi
    done
    if ! kill -0 "${worker_pid}" 2>/dev/null; then
        wait "${worker_pid}" 2>/dev/null
        log "worker exited (status $?); starting a fresh one"
        start_worker
        misses=0 next_ping=$((SECONDS + LIVENESS_INTERVAL))
        continue
    fi
    if ((SECONDS >= next_ping)); then
        next_ping=$((SECONDS + LIVENESS_INTERVAL))
        if $BIN/celery -A config inspect ping -d "${WORKER_NAME}" --timeout 5 >/dev/null 2>&1; then
            misses=0
        else
            misses=$((misses + 1))
            log "worker did not answer a ping through the broker (${misses}/${LIVENESS_MISSES})"
            if ((misses >= LIVENESS_MISSES)); then
                log "worker no longer consumes; replacing it"
                stop_pids "${worker_pid}"
                start_worker
                misses=0
            fi
        fi
    fi
done
