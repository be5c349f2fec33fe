"""The benchmark scripts still run against the code they measure (a signature change once left one
failing unnoticed). Their figures are printed, never asserted: only that they run to the end."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_inference_latency_runs_on_the_starter_model():
    done = subprocess.run(
        [sys.executable, "bench/inference_latency.py", "--repeat", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "per image, with heatmap" in done.stdout
    assert "throughput (one process, heatmaps on)" in done.stdout
