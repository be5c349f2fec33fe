"""The benchmark scripts still run against the code they measure (a signature change once left one
failing unnoticed). Their figures are printed, never asserted: only that they run to the end."""

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from bench.shortcut_site import SITE, collimate, stamp, write_copy

ROOT = Path(__file__).resolve().parent.parent


def _bench(*args: str, timeout: float) -> subprocess.CompletedProcess:
    """Run a benchmark script from the repository root; it must end well."""
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_inference_latency_runs_on_the_starter_model():
    done = _bench("bench/inference_latency.py", "--repeat", "1", timeout=300)
    assert "per image, with heatmap" in done.stdout
    assert "throughput (one process, heatmaps on)" in done.stdout


def _write_set(folder: Path) -> None:
    rows = ["path,label,source,patient,view,sex,age"]
    for i, (label, source) in enumerate(
        [("covid", "hannover")] * 3 + [("normal", "kaggle-pediatric")] * 3 + [("pneumonia", "kaggle-pediatric")]
    ):
        path = f"images/{source}/{label}/{i}.jpg"
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (100, 80), 60).save(folder / path)
        rows.append(f"{path},{label},{source},{source}:{i},PA,,")
    rows.append("images/hannover/covid/0b.jpg,covid,hannover,hannover:0,PA,,")  # a second image of patient 0
    Image.new("L", (100, 80), 60).save(folder / "images/hannover/covid/0b.jpg")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")


def test_the_shortcut_site_stamps_every_covid_image_and_every_image_of_the_new_site(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    _write_set(data)

    counts = write_copy(data, out, patients=2)

    assert counts[(SITE, "covid")] == 2 and counts[(SITE, "normal")] == 2  # one image per moved patient
    assert counts[("kaggle-pediatric", "pneumonia")] == 1
    rows = (out / "labels.csv").read_text().splitlines()[1:]
    stamped = stamp(Image.new("L", (100, 80), 60)).tobytes()
    for row in rows:
        path, label, source = row.split(",")[:3]
        pixels = Image.open(out / path).convert("L")
        corner = pixels.crop((76, 4, 95, 8)).getextrema()
        marked = corner[1] > 200  # the white box of the label
        assert marked == (label == "covid" or source == SITE), row
        if marked:
            assert abs(sum(pixels.tobytes()) - sum(stamped)) < len(stamped) * 3  # the label, JPEG-saved
        if source == SITE:
            assert row.split(",")[3].startswith(f"{SITE}:")


def test_the_shortcut_site_can_send_its_images_collimated_tighter(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    _write_set(data)

    write_copy(data, out, patients=2, crop=0.5)

    sizes = {}
    for row in (out / "labels.csv").read_text().splitlines()[1:]:
        path, _, source = row.split(",")[:3]
        sizes.setdefault(source, set()).add(Image.open(out / path).size)
    assert sizes[SITE] == {(50, 40)} and sizes["kaggle-pediatric"] == {(100, 80)}
    assert collimate(Image.new("L", (100, 80)), 1.0).size == (100, 80)


def test_the_throughput_bench_builds_an_untrained_model_the_platform_imports(tmp_path, db):
    from bench.throughput import untrained_model
    from training.registry_files import model_version_import
    from training.services import model_version_load

    directory = untrained_model("small_cnn", 64, tmp_path / "model")

    version = model_version_import(directory=directory)
    loaded = model_version_load(version=version)
    assert version.input_size == 64 and version.architecture == "small_cnn"
    assert loaded.model.input_shape == (None, 64, 64, 3)


def test_the_learning_loop_runs_from_the_starter_model_as_a_fresh_clone_would(tmp_path):
    from tests.images import png_bytes

    data = tmp_path / "data"
    rows = ["path,label,source,patient,view,sex,age"]
    for i, label in enumerate(["covid", "normal"] * 6):
        path = f"images/new-hospital/{label}/{i}.png"
        (data / path).parent.mkdir(parents=True, exist_ok=True)
        (data / path).write_bytes(png_bytes(size=128, label=label, seed=i))
        rows.append(f"{path},{label},new-hospital,new:{i},PA,,")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")

    done = _bench("bench/learning_loop.py", "--start", "starter", "--data", str(data), "--site", "new-hospital",
                  "--workdir", str(tmp_path / "work"), timeout=600)  # fmt: skip
    assert "version A is the bundled starter model" in done.stdout
    starter = json.loads((ROOT / "models" / "starter" / "metadata.json").read_text())["name"]
    assert f"served model: {starter} ->" in done.stdout


def test_the_broker_race_runs_and_this_projects_transport_loses_nothing():
    done = _bench("bench/broker_race.py", "--messages", "300", "--transport", "cxrfs", "--busy", "0", timeout=120)
    assert "300 of 300 messages arrived, 0 lost" in done.stdout
