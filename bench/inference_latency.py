"""Inference latency of the model runtime on the bundled starter model and samples.

    python bench/inference_latency.py [--model models/starter] [--images samples/images] [--repeat 3]

Prints cold load time, per-image latency (decode + preprocess + forward, with and without the
Grad-CAM heatmap) and the ratios between them, all measured in this one run on this machine.
"""

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "starter")
    parser.add_argument("--images", type=Path, default=ROOT / "samples" / "images")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from inference.services import DecisionRule, load_model, predict_image

    metadata = json.loads((args.model / "metadata.json").read_text())
    paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".dcm"})
    if not paths:
        print(f"No images under {args.images}", file=sys.stderr)
        return 1

    started = time.perf_counter()
    loaded = load_model(
        str(args.model / "model.keras"),
        key="bench",
        class_names=metadata["class_names"],
        input_size=metadata["input_size"],
        decision=DecisionRule.from_dict(metadata.get("decision_rule")),
    )
    cold_load = time.perf_counter() - started
    first_started = time.perf_counter()
    predict_image(paths[0], loaded)
    first_call = time.perf_counter() - first_started

    timings: dict[str, list[float]] = {"without heatmap": [], "with heatmap": []}
    for _ in range(args.repeat):
        for path in paths:
            for name, with_heatmap in (("without heatmap", False), ("with heatmap", True)):
                t0 = time.perf_counter()
                predict_image(path, loaded, with_heatmap=with_heatmap)
                timings[name].append(time.perf_counter() - t0)

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"model {metadata['name']} ({metadata['architecture']}, {metadata['input_size']} px); "
          f"{len(paths)} images x {args.repeat}")  # fmt: skip
    print(f"cold load                      {_ms(cold_load)}")
    print(f"first prediction (tracing)     {_ms(first_call)}")
    for name, values in timings.items():
        ordered = sorted(values)
        p95 = ordered[int(0.95 * (len(ordered) - 1))]
        print(f"per image, {name:<16}    median {_ms(statistics.median(values))}   p95 {_ms(p95)}")
    without = statistics.median(timings["without heatmap"])
    with_heatmap = statistics.median(timings["with heatmap"])
    print(f"ratio with/without heatmap     {with_heatmap / without:8.2f}")
    print(f"ratio first call/warm call     {first_call / with_heatmap:8.2f}")
    print(f"throughput (one process, heatmaps on) {1 / with_heatmap:6.1f} images/s")
    print(f"peak RSS                       {rss_mb:8.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
