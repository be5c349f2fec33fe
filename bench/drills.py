"""Fault drills on the production roles (entrypoint.sh on PostgreSQL + a Redis of their own).

    .venv/bin/python bench/drills.py [--drill worker-kill|broker-outage|db-cut|all] [--repeat 3]   (make drills)

worker-kill    4 clients upload; 3 s in, the inference worker's process group gets SIGKILL mid-batch;
               it is restarted 5 s later (as compose's restart policy does)
broker-outage  4 clients upload all along; Redis is stopped for 20 s, then started, --repeat times
db-cut         4 clients upload; every PostgreSQL connection of the platform is terminated every 2 s
               for 10 s (pg_terminate_backend), as a database failover does
Each drill then waits for every stored study to be predicted. It passes when no study is lost
(every 201 is a study that ends predicted, nothing else is stored) and every answer is 201 or 503.
The requeue job runs every minute with a 30 s lease (bench/harness.py), so recovery takes minutes.
Exit status 1 when a drill fails.
"""

import argparse
import collections
import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import PG_URL, Platform, cxr_images, wait_until  # noqa: E402


class Uploaders:
    """C client threads uploading real X-rays until stopped (or a fixed number each)."""

    def __init__(self, platform: Platform, *, clients: int = 4, per_client: int | None = None) -> None:
        self.platform = platform
        self.images = [p.read_bytes() for p in cxr_images(400)]
        self.per_client = per_client
        self.statuses: collections.Counter = collections.Counter()
        self.created: list[int] = []
        self.retry_after_missing = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, index: int) -> None:
        sent = 0
        while not self._stop.is_set() and (self.per_client is None or sent < self.per_client):
            data = self.images[(index * 97 + sent) % len(self.images)]
            status, body = self.platform.upload(data)
            sent += 1
            with self._lock:
                self.statuses[status] += 1
                if status == 201:
                    self.created.append(body["id"])
                elif status == 503 and "Retry-After" not in body.get("_headers", {}):
                    self.retry_after_missing += 1
            if status != 201:
                time.sleep(0.5)  # a polite client backs off

    def start(self) -> "Uploaders":
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self.threads:
            thread.join(timeout=120)

    def join(self) -> None:
        for thread in self.threads:
            thread.join()


def _settle(platform: Platform, uploads: Uploaders, *, timeout: float) -> dict:
    """Wait until every stored study is predicted or failed; report what was lost."""
    started = time.monotonic()

    def done() -> bool:
        counts = platform.statuses()
        return counts["queued"] + counts["processing"] == 0

    with contextlib.suppress(TimeoutError):
        wait_until(done, timeout=timeout, interval=2, what="every study to finish")
    counts = platform.statuses()
    script = "from studies.models import Study; print(Study.objects.filter(attempts__gt=1).count())"
    retried = int(platform.manage("shell", "-c", script).stdout.split()[-1])
    stored = sum(counts.values())
    return {
        "answers": dict(uploads.statuses),
        "stored": stored,
        "created_201": len(uploads.created),
        "statuses": counts,
        "settled_in_s": round(time.monotonic() - started),
        "predicted_after_a_lost_attempt": retried,
        "restarts": platform.restarts,
        "ok": (
            set(uploads.statuses) <= {201, 503}
            and uploads.retry_after_missing == 0
            and stored == len(uploads.created)
            and counts["predicted"] == stored
        ),
    }


def drill_worker_kill(platform: Platform, args) -> dict:
    uploads = Uploaders(platform, per_client=15).start()
    time.sleep(3)
    platform.hold("worker-inference")
    platform.signal_role("worker-inference", signal.SIGKILL)
    time.sleep(5)
    platform.release("worker-inference")  # the supervisor starts it again
    uploads.join()
    return _settle(platform, uploads, timeout=args.settle)


def drill_broker_outage(platform: Platform, args) -> dict:
    uploads = Uploaders(platform).start()
    for _ in range(args.repeat):
        time.sleep(10)
        platform.redis.stop()
        time.sleep(20)
        platform.redis.start()
    time.sleep(10)
    uploads.stop()
    return _settle(platform, uploads, timeout=args.settle)


def drill_db_cut(platform: Platform, args) -> dict:
    uploads = Uploaders(platform).start()
    sql = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        f"WHERE datname = '{platform.database}' AND pid <> pg_backend_pid()"
    )
    for _ in range(5):
        time.sleep(2)
        subprocess.run(["psql", PG_URL + "/postgres", "-qAtc", sql], check=True, capture_output=True)
    time.sleep(5)
    uploads.stop()
    return _settle(platform, uploads, timeout=args.settle)


DRILLS = {"worker-kill": drill_worker_kill, "broker-outage": drill_broker_outage, "db-cut": drill_db_cut}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drill", choices=[*DRILLS, "all"], default="all")
    parser.add_argument("--repeat", type=int, default=3, help="broker outages in a row")
    parser.add_argument("--settle", type=float, default=420, help="seconds to wait for every study to finish")
    args = parser.parse_args()
    failed = 0
    for name in DRILLS if args.drill == "all" else [args.drill]:
        platform = Platform("production")
        try:
            platform.prepare()
            platform.start(supervise=True)
            result = DRILLS[name](platform, args)
        finally:
            platform.stop()
        print(f"{name:<14} {'PASS' if result['ok'] else 'FAIL'}  {json.dumps(result)}", flush=True)
        if result["ok"]:
            platform.cleanup()
        else:
            failed += 1
            print(f"  logs kept in {platform.workdir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
