"""What a hostile upload costs the upload check, next to an ordinary one.

    python bench/hostile_input.py [--repeat 5]

Runs ``studies.services.image_check`` (decode with limits + de-identify, in memory) on an ordinary
sample JPEG and a 16-bit DICOM, then on the issue's attack (a deflated DICOM declaring 12000 x 12000 pixels, 280 KB
on the wire, 288 MB inflated), a PNG declaring 20000 x 20000 pixels with a zlib-bomb IDAT, and the whole
generated hostile corpus (tests/hostile.py). Prints milliseconds, the peak resident memory growth of each step,
and each refusal's time as a ratio of the ordinary JPEG's. Measured in this one run on this machine.
"""

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _time(check, data: bytes, repeat: int) -> tuple[float, str]:
    from django.core.exceptions import ValidationError

    outcome = "accepted"
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        try:
            check(file=io.BytesIO(data))
        except ValidationError as exc:
            outcome = "refused: " + " ".join(exc.messages)[:90]
        times.append(time.perf_counter() - started)
    return statistics.median(times), outcome


def _peak_traced_mb(check, data: bytes) -> float:
    """Peak Python + NumPy allocation of one check, in MB (tracemalloc sees NumPy's buffers)."""
    from django.core.exceptions import ValidationError

    tracemalloc.start()
    with contextlib.suppress(ValidationError):
        check(file=io.BytesIO(data))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    import django

    django.setup()
    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.WARNING)  # pydicom logs every malformed header of the corpus
    from studies.services import image_check
    from tests.hostile import _deflated_dicom_bomb, _png, _zeros_deflated, hostile_files
    from tests.images import dicom_bytes

    jpeg = (ROOT / "samples" / "images" / "covid" / "hannover-00.jpg").read_bytes()
    cases = [
        ("sample JPEG (ordinary)", jpeg),
        ("16-bit DICOM 96 px (ordinary)", dicom_bytes()),
        ("deflated DICOM declaring 12000x12000", _deflated_dicom_bomb(288)),  # 288 MB inflated, as in the issue
        ("PNG declaring 20000x20000, zlib-bomb IDAT", _png(20_000, 20_000, _zeros_deflated(8))),
    ]
    baseline = None
    print(f"{'case':44} {'bytes':>9} {'median':>10} {'x JPEG':>7} {'peak MB':>8}  outcome")
    for name, data in cases:
        seconds, outcome = _time(image_check, data, args.repeat)
        baseline = baseline or seconds
        print(
            f"{name:44} {len(data):9d} {seconds * 1000:8.1f} ms {seconds / baseline:7.2f} "
            f"{_peak_traced_mb(image_check, data):8.1f}  {outcome}"
        )
    corpus = list(hostile_files())
    started = time.perf_counter()
    refused = sum(_time(image_check, data, 1)[1].startswith("refused") for _, data in corpus)
    elapsed = time.perf_counter() - started
    worst = max(_peak_traced_mb(image_check, data) for _, data in corpus)
    print(
        f"hostile corpus: {refused}/{len(corpus)} refused in {elapsed:.2f} s "
        f"({elapsed / len(corpus) * 1000:.2f} ms a file, {elapsed / len(corpus) / baseline:.2f} x JPEG); "
        f"largest peak allocation of one file {worst:.1f} MB"
    )
    return 0 if refused == len(corpus) else 1


if __name__ == "__main__":
    raise SystemExit(main())
