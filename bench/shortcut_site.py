"""Write a copy of the development set with a simulated new hospital whose images break a shortcut.

The judged case of issue 7 (a hospital whose adult normals the served model calls COVID, because
in the development set "adult" means COVID) cannot be rebuilt from ../shared: it holds 3 adult
normals. This copy rebuilds its structure instead, with a shortcut of its own:

- every COVID image of the other sources carries a burned-in label (a white box with three dark
  bars, top right), as annotation labels do in many public COVID collections; no other image has it,
  so a model trained on them learns "label -> COVID";
- a new source, ``stamped-hospital``, takes ``--patients`` COVID patients of hannover and as many
  normal patients of kaggle-pediatric (one image each, chosen by a hash of the patient key) and
  stamps the label on all of them, normals included, as a site whose software labels every image.

Version A, trained without that source, then calls most of its normals COVID although its features
still tell them apart: the structure of the judged case. Then run the loop on it:

    .venv/bin/python bench/shortcut_site.py var/shortcut-data
    .venv/bin/python bench/learning_loop.py --data var/shortcut-data --site stamped-hospital

It is a simulation on real images, with a synthetic shortcut: easier than adult normals, whose
difference from adult COVID is in the lungs only (here A already ranks the site's images almost
perfectly). It shows whether the loop turns a site's reviews into a served model that answers that
site right, without breaking the others; it is not evidence about any real hospital.
"""

import argparse
import csv
import hashlib
import shutil
import sys
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "cxr"
SITE = "stamped-hospital"


def stamp(image: Image.Image) -> Image.Image:
    """The burned-in label: a white box with three dark bars near the top right corner."""
    image = image.convert("L")
    width, height = image.size
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = int(width * 0.74), int(height * 0.04), int(width * 0.96), int(height * 0.10)
    draw.rectangle([x0, y0, x1, y1], fill=255)
    bar_width, bar_top, bar_bottom = int((x1 - x0) * 0.2), y0 + (y1 - y0) // 3, y1 - (y1 - y0) // 3
    for k in range(3):
        left = x0 + int((x1 - x0) * (0.08 + 0.3 * k))
        draw.rectangle([left, bar_top, left + bar_width, bar_bottom], fill=0)
    return image


def _by_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def site_patients(rows: list[dict[str, str]], patients: int) -> set[str]:
    """The hannover COVID and kaggle-pediatric normal patients that move to the new site."""
    covid = sorted({r["patient"] for r in rows if r["source"] == "hannover" and r["label"] == "covid"}, key=_by_hash)
    normal = sorted(
        {r["patient"] for r in rows if r["source"] == "kaggle-pediatric" and r["label"] == "normal"}, key=_by_hash
    )
    if len(covid) < patients or len(normal) < patients:
        raise SystemExit(f"--patients {patients} is more than the data holds ({len(covid)} / {len(normal)}).")
    return set(covid[:patients]) | set(normal[:patients])


def collimate(image: Image.Image, fraction: float) -> Image.Image:
    """The central ``fraction`` of each side, as a site that collimates tighter sends it."""
    if fraction >= 1.0:
        return image
    width, height = image.size
    left, top = int(width * (1 - fraction) / 2), int(height * (1 - fraction) / 2)
    return image.crop((left, top, width - left, height - top))


def write_copy(data: Path, out: Path, patients: int, crop: float = 1.0) -> Counter:
    with (data / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    moving, placed, written = site_patients(rows, patients), set(), []
    for row in rows:
        row = dict(row)
        if row["patient"] in moving:
            if row["patient"] in placed:
                continue  # one image per patient: a site's first studies
            placed.add(row["patient"])
            row["source"], row["patient"] = SITE, f"{SITE}:{row['patient']}"
        target = out / row["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        if row["source"] == SITE:
            stamp(collimate(Image.open(data / row["path"]), crop)).save(target, quality=90)
        elif row["label"] == "covid":
            stamp(Image.open(data / row["path"])).save(target, quality=90)
        else:
            shutil.copyfile(data / row["path"], target)
        written.append(row)
    with (out / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(written)
    return Counter((row["source"], row["label"]) for row in written)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="a new folder for the copy (labels.csv and images/)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the development set")
    parser.add_argument("--patients", type=int, default=20, help="COVID patients, and as many normal, for the site")
    parser.add_argument(
        "--crop", type=float, default=1.0, help="the site sends the central CROP of each side (tighter collimation)"
    )
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        print(f"{args.out} is not empty.", file=sys.stderr)
        return 2
    counts = write_copy(args.data, args.out, args.patients, args.crop)
    for (source, label), n in sorted(counts.items()):
        print(f"{source:18} {label:10} {n:5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
