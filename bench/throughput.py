"""Prediction throughput and idle latency of the platform against the same model's own pipeline.

    .venv/bin/python bench/throughput.py [--mode embedded|production|both] [--studies 200] [--clients 4]
                                         [--model DIR | --untrained vgg16 --input-size 224]

In one run, on this machine:
  raw pipeline   one process: decode, batched forward + Grad-CAM, overlays (the model's own limit),
                 and the single-image latency (decode + forward + Grad-CAM + overlay of one image)
  platform       a fresh platform (bench/harness.py) in each mode; N real X-rays uploaded through
                 POST /api/studies/ by C client threads; timed from the first upload until every
                 study is predicted; then single studies uploaded one at a time on an idle platform,
                 timed from the upload until the API shows the prediction (polled every 20 ms)
The model is the starter unless --model names an exported one (metadata.json + model.keras), or
--untrained builds a randomly initialised network of that backbone (timing only: its answers mean
nothing), e.g. the tutorial's VGG16 at 224 px, to see the platform's cost against a heavier model.
Prints images/s, the platform/raw ratio, the idle added latency (platform - model's own), and the CPU
milliseconds per image of web, workers and the upload clients against the raw pipeline's (contention-proof),
and PostgreSQL's backends besides (production).
"""

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import STARTER, CpuSampler, Platform, cxr_images, wait_until  # noqa: E402
from training.architectures import BACKBONES  # noqa: E402


def untrained_model(backbone: str, input_size: int, into: Path) -> Path:
    """An exported model directory with a randomly initialised ``backbone`` (the starter's metadata,
    its decision rule included, with this architecture and input size)."""
    from training.architectures import build_model

    metadata = json.loads((STARTER / "metadata.json").read_text())
    metadata.update(architecture=backbone, input_size=input_size)
    metadata["hyperparameters"].update(backbone=backbone, input_size=input_size)
    into.mkdir(parents=True, exist_ok=True)
    network = build_model(backbone=backbone, input_size=input_size, class_names=metadata["class_names"])
    network.save(into / "model.keras")
    (into / "metadata.json").write_text(json.dumps(metadata))
    return into


def raw_pipeline(paths: list[Path], *, model: Path, batch_size: int) -> tuple[float, float, float]:
    """(images/s in batches, median single-image latency in s, CPU ms per image in batches) of the
    model in this process."""
    from inference.services import decode_many, load_model, predict_batch, warm_up

    metadata = json.loads((model / "metadata.json").read_text())
    loaded = load_model(
        str(model / "model.keras"),
        key="bench-raw",
        class_names=metadata["class_names"],
        input_size=metadata["input_size"],
    )
    warm_up(loaded)
    blobs = [p.read_bytes() for p in paths]
    started, cpu_started = time.perf_counter(), time.process_time()
    for start in range(0, len(blobs), batch_size):
        predict_batch(decode_many(blobs[start : start + batch_size]), loaded)
    images_per_s = len(blobs) / (time.perf_counter() - started)
    cpu_ms = 1000 * (time.process_time() - cpu_started) / len(blobs)
    singles = []
    for blob in blobs[:30]:
        t0 = time.perf_counter()
        predict_batch(decode_many([blob]), loaded)
        singles.append(time.perf_counter() - t0)
    return images_per_s, statistics.median(singles), cpu_ms


def platform_run(mode: str, paths: list[Path], *, model: Path, clients: int, idle_samples: int, processes: int) -> dict:
    extra = {"INFERENCE_CONCURRENCY": str(processes), "WORKER_CONCURRENCY": str(processes)} if processes else {}
    platform = Platform(mode, extra_env=extra, model=model)
    try:
        platform.prepare()
        platform.start()
        # Warm the whole path once (web, broker, worker) before timing.
        for path in paths[:2]:
            assert platform.upload(path.read_bytes())[0] == 201
        wait_until(lambda: platform.count("predicted") == 2, timeout=120, what="warm-up predictions")

        statuses: list[int] = []
        lock = threading.Lock()

        def client(chunk: list[Path]) -> None:
            for path in chunk:
                status, _ = platform.upload(path.read_bytes(), filename=path.name)
                with lock:
                    statuses.append(status)

        chunks = [paths[i::clients] for i in range(clients)]
        sampler = CpuSampler(platform)
        sampler.start()
        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(chunk,)) for chunk in chunks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        uploaded_in = time.perf_counter() - started
        total = 2 + len(paths)
        wait_until(lambda: platform.settled() >= total, timeout=1800, interval=0.1, what="all predictions")
        elapsed = time.perf_counter() - started
        cpu = sampler.stop()

        latencies, idle_failed = [], []
        for path in paths[:idle_samples]:
            time.sleep(0.5)  # idle: nothing queued, workers waiting
            t0 = time.perf_counter()
            status, body = platform.upload(path.read_bytes())
            assert status == 201, body
            study = f"/api/studies/{body['id']}/"
            wait_until(lambda s=study: settled(platform.get(s)), timeout=60, interval=0.02, what=f"{study} predicted")
            latencies.append(time.perf_counter() - t0)
            detail = json.loads(platform.get(study))
            if detail["status"] == "failed":
                idle_failed.append(detail.get("error", ""))
        result = {
            "images_per_s": len(paths) / elapsed,
            "uploads_per_s": len(paths) / uploaded_in,
            "non_201": sum(1 for s in statuses if s != 201),
            "failed": platform.count("failed"),
            "idle_latency_s": statistics.median(latencies),
            "idle_failed": idle_failed,
            "cpu_ms_per_image": {
                k: 1000 * cpu[k] / len(paths) for k in ("web", "worker", "other", "postgres", "client")
            },
        }
    except Exception:
        platform.stop()
        print(f"{mode}: the run stopped; its logs and database are kept in {platform.workdir}", file=sys.stderr)
        raise
    platform.stop()
    platform.cleanup()
    return result


def settled(detail: bytes) -> bool:
    """A study's detail shows it predicted, or failed (which the run then reports with the reason)."""
    return b'"status":"predicted"' in detail or b'"status":"failed"' in detail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["embedded", "production", "both"], default="both")
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--idle-samples", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--processes", type=int, default=0, help="inference worker processes (0: one per core)")
    parser.add_argument("--model", type=Path, default=STARTER, help="an exported model directory")
    parser.add_argument("--untrained", choices=BACKBONES, help="a randomly initialised network instead (timing only)")
    parser.add_argument("--input-size", type=int, default=224, help="with --untrained")
    args = parser.parse_args()

    paths = cxr_images(args.studies)
    modes = ["embedded", "production"] if args.mode == "both" else [args.mode]
    with tempfile.TemporaryDirectory(prefix="cxr-untrained-") as scratch:
        model = untrained_model(args.untrained, args.input_size, Path(scratch)) if args.untrained else args.model
        results = {
            mode: platform_run(
                mode, paths, model=model, clients=args.clients, idle_samples=args.idle_samples, processes=args.processes
            )
            for mode in modes
        }
        raw_ips, raw_single, raw_cpu = raw_pipeline(paths, model=model, batch_size=args.batch_size)
    name = f"untrained {args.untrained} at {args.input_size} px" if args.untrained else f"model {args.model.name}"

    print(f"{len(paths)} real X-rays, {args.clients} upload clients, {name}, raw batches of {args.batch_size}")
    print(
        f"raw pipeline (one process)          {raw_ips:7.1f} images/s; one image {raw_single * 1000:6.1f} ms; "
        f"{raw_cpu:.1f} ms CPU per image"
    )
    for mode, r in results.items():
        print(
            f"platform {mode:<11} {r['images_per_s']:7.1f} images/s  ratio {r['images_per_s'] / raw_ips:5.2f}  "
            f"(uploads {r['uploads_per_s']:5.1f}/s, non-201 {r['non_201']}, failed {r['failed']})  "
            f"idle upload->prediction {r['idle_latency_s'] * 1000:6.0f} ms, "
            f"added {1000 * (r['idle_latency_s'] - raw_single):6.0f} ms"
        )
        for error in r["idle_failed"]:
            print(f"  an idle study FAILED: {error}")
        cpu = r["cpu_ms_per_image"]
        in_all = cpu["web"] + cpu["worker"] + cpu["other"] + cpu["client"]
        print(
            f"  CPU ms per image: web {cpu['web']:.1f}, workers {cpu['worker']:.1f}, other {cpu['other']:.1f}, "
            f"upload clients {cpu['client']:.1f}; {in_all:.1f} in all (raw pipeline: {raw_cpu:.1f}); "
            f"PostgreSQL's backends besides: {cpu['postgres']:.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
