"""The API under load: list and review-queue endpoints with 10,000 studies in PostgreSQL.

    .venv/bin/python bench/load.py [--studies 10000] [--clients 20] [--seconds 20] [--web-concurrency N]
                                   [--threads N] [--profile]

Starts the production web role (entrypoint.sh web: gunicorn, config.settings.production) on a
PostgreSQL database of its own, seeds N studies (80% predicted, 30% reviewed, one stored image) and
analyzes them (as autovacuum does on a live database; a fresh seed's plans are guesses), then C
client threads (a plain threaded client, keep-alive off like most API clients behind a proxy)
request for S seconds, alternating:
  list    GET /api/studies/                                 (page 1, 25 studies)
  queue   GET /api/studies/?status=predicted&reviewed=false (the review queue through the API)
  deep    GET /api/studies/?page=200                         (a page far from the start)
Prints requests/s and p50/p95/p99 latency per endpoint, the response time of one request alone, the
work of one request in one process (CPU, queries and their time in the database; --profile: where
the time goes), and the CPU each side used per request under load: gunicorn, PostgreSQL, the client,
and whatever else ran on the machine meanwhile (other people's jobs share these cores).
"""

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import CpuSampler, Platform, cxr_images  # noqa: E402

ENDPOINTS = {
    "list": "/api/studies/",
    "queue": "/api/studies/?status=predicted&reviewed=false",
    "deep": "/api/studies/?page=200",
}

SEED = """
import random, shutil
from pathlib import Path
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from studies.models import Patient, Prediction, Review, Site, Study
from training.models import ModelVersion

n, image = {n}, Path({image!r})
random.seed(7)
name = "studies/00/seed.jpg"
(Path(settings.MEDIA_ROOT) / "studies/00").mkdir(parents=True, exist_ok=True)
shutil.copy(image, Path(settings.MEDIA_ROOT) / name)
user = get_user_model().objects.get(username="bench")
version = ModelVersion.objects.get(is_active=True)
site = Site.objects.get(slug="bench")  # the bench user reviews it (bench/harness.py)
patients = Patient.objects.bulk_create([Patient(site=site, ref=f"seed:{{i}}") for i in range(n)], batch_size=2000)
labels = ["covid", "normal", "pneumonia"]
studies = Study.objects.bulk_create(
    [
        Study(site=site, patient=p, image=name, sha256=f"{{i:064x}}", width=512, height=512, source=site.slug,
              uploaded_by=user, status="predicted" if i % 5 else "queued")
        for i, p in enumerate(patients)
    ],
    batch_size=2000,
)
predictions, reviews = [], []
for i, s in enumerate(studies):
    if i % 5:
        label = random.choice(labels)
        predictions.append(Prediction(study=s, model_version=version, label=label, confidence=random.random(),
                                      entropy=random.random(), probabilities={{k: 1 / 3 for k in labels}},
                                      inference_ms=20.0))
        if i % 10 < 3:
            final = random.choice(labels)
            reviews.append(Review(study=s, reviewer=user, label=final, comment=""))
            s.reading_state, s.label_final, s.label_rule = "final", final, "single_read"
Prediction.objects.bulk_create(predictions, batch_size=2000)
Review.objects.bulk_create(reviews, batch_size=2000)
Study.objects.bulk_update([r.study for r in reviews], ["reading_state", "label_final", "label_rule"], batch_size=2000)
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("VACUUM ANALYZE")
print(Study.objects.count())
"""

# One request of each endpoint in one process (manage.py shell, the production settings): CPU per
# request, the queries and the time spent in the database driver; with --profile, cProfile's top.
IN_PROCESS = """
import cProfile, pstats, time
from django.db import connection
from django.test import Client
endpoints, profile = {endpoints!r}, {profile!r}
client = Client(HTTP_AUTHORIZATION="Token {token}", HTTP_HOST="127.0.0.1")
queries = []
def timed(execute, sql, params, many, context):
    started = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        queries.append(time.perf_counter() - started)
for name, path in endpoints.items():
    for _ in range(5):
        assert client.get(path).status_code == 200
    runs = 50
    queries.clear()
    cpu, wall = time.process_time(), time.perf_counter()
    with connection.execute_wrapper(timed):
        for _ in range(runs):
            client.get(path)
    cpu, wall = (time.process_time() - cpu) / runs * 1000, (time.perf_counter() - wall) / runs * 1000
    print(f"  {{name:<6}} {{wall:5.1f}} ms ({{cpu:4.1f}} ms CPU), {{len(queries) / runs:.0f}} queries, "
          f"{{sum(queries) / runs * 1000:4.1f}} ms of it in the database")
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [client.get(path) for _ in range(runs)])
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
"""


def run_clients(platform: Platform, *, clients: int, seconds: float) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {name: [] for name in ENDPOINTS}
    errors: list[int] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(index: int) -> None:
        names = list(ENDPOINTS)
        i = index
        while time.perf_counter() < deadline:
            name = names[i % len(names)]
            i += 1
            t0 = time.perf_counter()
            status, _, _ = platform.request("GET", ENDPOINTS[name], timeout=30)
            took = time.perf_counter() - t0
            with lock:
                (timings[name] if status == 200 else errors).append(took if status == 200 else status)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        print(f"  non-200 answers: {len(errors)} ({sorted(set(errors))})")
    return timings


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--web-concurrency", type=int, default=0, help="gunicorn workers (0: the default)")
    parser.add_argument("--threads", type=int, default=0, help="gunicorn threads per worker (0: the default)")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top of one request in one process")
    args = parser.parse_args()

    extra = {"GUNICORN_LOG_LEVEL": "warning", "GUNICORN_ACCESS_LOG": "false"}
    if args.web_concurrency:
        extra["WEB_CONCURRENCY"] = str(args.web_concurrency)
    if args.threads:
        extra["GUNICORN_THREADS"] = str(args.threads)
    platform = Platform("production", extra_env=extra)
    try:
        platform.prepare()
        seeded = platform.manage("shell", "-c", SEED.format(n=args.studies, image=str(cxr_images(1)[0])))
        print(f"seeded: {seeded.stdout.split()[-1]} studies in PostgreSQL")
        script = IN_PROCESS.format(endpoints=ENDPOINTS, profile=args.profile, token=platform.token)
        print("one request in one process (production settings, PostgreSQL):")
        print(platform.manage("shell", "--no-imports", "-c", script).stdout.rstrip())
        platform.start(roles=("web",), require_workers=False)
        alone = {}
        for name, path in ENDPOINTS.items():
            samples = []
            for _ in range(10):
                t0 = time.perf_counter()
                platform.request("GET", path)
                samples.append(time.perf_counter() - t0)
            alone[name] = statistics.median(samples[2:]) * 1000
        sampler = CpuSampler(platform)
        sampler.start()
        timings = run_clients(platform, clients=args.clients, seconds=args.seconds)
        cpu = sampler.stop()
    finally:
        platform.stop()
        platform.cleanup()
    total = sum(len(v) for v in timings.values())
    print(f"{args.clients} clients for {args.seconds:.0f} s: {total / args.seconds:6.1f} requests/s in all")
    for name, values in timings.items():
        print(
            f"  {name:<6} {len(values) / args.seconds:6.1f} req/s  p50 {_pct(values, 0.5):6.0f} ms  "
            f"p95 {_pct(values, 0.95):6.0f} ms  p99 {_pct(values, 0.99):6.0f} ms  alone {alone[name]:5.0f} ms"
        )
    cores = len(os.sched_getaffinity(0))
    print(
        f"CPU per request: gunicorn {cpu['web'] / total * 1000:.1f} ms, PostgreSQL "
        f"{cpu['postgres'] / total * 1000:.1f} ms, client {cpu['client'] / total * 1000:.1f} ms; other processes used "
        f"{cpu['machine_other'] / cpu['wall']:.2f} of {cores} cores meanwhile (load average {cpu['load']:.2f} at "
        "the start)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
