"""The learning loop end to end on the real chest X-ray development set.

Scenario "new-site" (the default): version A is trained without one hospital (--site, default
cohen-early, whose adults include the set's only adult non-COVID pneumonias). Half of that
hospital's patients are uploaded through the REST API and reviewed with their true labels; a run is
started through the API (it fine-tunes A); the other half, uploaded but never reviewed, judges A
against the served model, and the old sources are compared case by case on the frozen test split.

With --start starter, version A is the bundled starter model and the platform holds only the 40
bundled samples besides the new hospital: what a fresh clone without ../shared starts from.

Scenario "new-sources": train A on some sources, upload and review others, retrain B, compare both
per source on the same frozen, patient-level test split.

    .venv/bin/python bench/learning_loop.py                       # new-site, default settings
    .venv/bin/python bench/learning_loop.py --epochs 2 --input-size 64 --scenario new-sources

Everything happens in a work folder of its own (SQLite database, media root); Celery tasks run inline.
These are research numbers on a small, confounded data set, never diagnostic performance.
"""

import argparse
import csv
import hashlib
import io
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rest_framework.response import Response
    from rest_framework.test import APIClient

    from training.models import ModelVersion, TrainingRun

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "cxr"
DEFAULT_TRAIN_SOURCES = "kaggle-pediatric,hannover"
DEFAULT_NEW_SOURCES = "cohen-early,figure1"
HONEST_NOTE = (
    "These figures come from one run on a small research development set in which class is confounded with "
    "source and age (children's normal/pneumonia images, adults' COVID images from other hospitals), with few "
    "test patients per new source and wide intervals. They measure whether the platform's loop works and how "
    "the two versions compare on these frozen cases; they are not diagnostic performance."
)


class BenchError(Exception):
    """A step did not do what the loop expects; the message says what happened."""


class Stopwatch:
    """Times named steps and remembers the one running, to name it when it fails."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.current = "setup"

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.current = name
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        started = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - started
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {self.seconds[name]:.1f} s", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("new-site", "new-sources"), default="new-site")
    parser.add_argument("--site", default="cohen-early", help="new-site: the hospital left out of version A")
    parser.add_argument(
        "--start",
        choices=("scratch", "starter"),
        default="scratch",
        help="new-site: version A trained from scratch on the other sources of --data, or the bundled starter "
        "model with the 40 bundled samples (a fresh clone without ../shared)",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding labels.csv and images/")
    parser.add_argument("--train-sources", default=DEFAULT_TRAIN_SOURCES, help="sources imported for version A")
    parser.add_argument("--new-sources", default=DEFAULT_NEW_SOURCES, help="sources uploaded and reviewed")
    parser.add_argument("--epochs", type=int, help="training epochs (default: settings, TRAINING_EPOCHS)")
    parser.add_argument("--input-size", type=int, help="input size in px (default: settings, TRAINING_INPUT_SIZE)")
    parser.add_argument("--workdir", type=Path, help="an empty or new folder to work in (kept afterwards)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    parser.add_argument("--json", type=Path, help="also write the whole report as JSON here")
    return parser.parse_args()


def read_rows(data: Path, train_sources: list[str], new_sources: list[str]) -> list[dict[str, str]]:
    """The labels.csv rows of the new sources, after checking that every named source exists."""
    labels = data / "labels.csv"
    if not labels.is_file():
        raise BenchError(f"{labels} not found; pass --data.")
    with labels.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    known = {row["source"] for row in rows}
    unknown = sorted(set(train_sources + new_sources) - known)
    if unknown:
        raise BenchError(f"unknown source(s) {', '.join(unknown)}; labels.csv has {', '.join(sorted(known))}.")
    if not train_sources or not new_sources:
        raise BenchError("name at least one train source and one new source.")
    overlap = sorted(set(train_sources) & set(new_sources))
    if overlap:
        raise BenchError(f"{', '.join(overlap)} cannot be both a train source and a new source.")
    return [row for row in rows if row["source"] in new_sources]


def prepare_workdir(workdir: Path | None) -> tuple[Path, bool]:
    """The folder to work in and whether this script created it (and may remove it)."""
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix="cxr-bench-")), True
    if workdir.exists() and any(workdir.iterdir()):
        raise BenchError(f"{workdir} is not empty; the benchmark needs a fresh database and media root.")
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir.resolve(), False


def setup_django(workdir: Path) -> None:
    """Point the project at the work folder, run tasks inline, create the tables."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.base"
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
    os.environ["MEDIA_ROOT"] = str(workdir / "media")
    os.environ["ALLOWED_HOSTS"] = "testserver"  # the host name of Django's test client
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    from config.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    call_command("migrate", verbosity=0)


def import_sources(data: Path, sources: list[str]) -> dict[str, int]:
    from django.core.management import call_command
    from django.db.models import Count

    from studies.models import Study

    errors = io.StringIO()
    call_command(
        "import_dataset", str(data), sources=",".join(sources), verbosity=0, stdout=io.StringIO(), stderr=errors
    )
    if errors.getvalue().strip():
        print(f"import_dataset reported:\n{errors.getvalue().strip()}", file=sys.stderr)
    counts = dict(Study.objects.values_list("source").annotate(n=Count("id")).order_by("source"))
    missing = [source for source in sources if not counts.get(source)]
    if missing:
        raise BenchError(f"no study was imported for {', '.join(missing)}.")
    return counts


def train_version(overrides: dict[str, int]) -> "TrainingRun":
    """One training run with the real service, in this process: snapshot, train, evaluate, gate."""
    from training.models import TrainingRun
    from training.services import training_run_create, training_run_execute

    run = training_run_create(user=None, trigger="bench", hyperparameters=overrides, dispatch=False)
    run = training_run_execute(run_id=run.pk)
    if run.status != TrainingRun.Status.SUCCEEDED or run.model_version is None:
        raise BenchError(f"training run {run.pk} ended {run.status}: {run.error}")
    return run


def expect(response: "Response", status: int, what: str) -> None:
    if response.status_code != status:
        raise BenchError(f"{what}: HTTP {response.status_code} (expected {status}): {response.content[:500]!r}")


def api_client(role: str, sources: list[str]) -> "APIClient":
    """A user holding `role` at the sites `sources`, authenticated the way a real client is: a token from the API."""
    from django.contrib.auth import get_user_model
    from django.urls import reverse
    from rest_framework.test import APIClient

    from studies.sites import membership_set, site_get_or_create

    password = secrets.token_urlsafe(16)
    user = get_user_model().objects.create_user(username=f"bench-{role}", password=password)
    for source in sources:
        membership_set(user=user, site=site_get_or_create(name=source), role=role)
    client = APIClient()
    response = client.post(reverse("api:auth-token"), {"username": user.username, "password": password})
    expect(response, 200, f"token for the {role}")
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.data['token']}")
    return client


def pseudonym(patient: str) -> str:
    """The data set's patient keys hold file names with dates and long numbers, which the API refuses
    as identifiers; a site sends a pseudonym, the same for every image of a patient."""
    digest = hashlib.sha256(patient.encode()).digest()
    return "pt-" + "".join(chr(ord("a") + byte % 26) for byte in digest[:12])


def upload_studies(client: "APIClient", data: Path, rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """POST each image (prediction runs inline on commit), then GET it back and check it is predicted."""
    from django.urls import reverse

    uploads = []
    for row in rows:
        with (data / row["path"]).open("rb") as image:
            started = time.perf_counter()
            response = client.post(
                reverse("api:study-list"),
                {
                    "image": image,
                    "patient_ref": pseudonym(row["patient"]),
                    "view": row["view"],
                    "source": row["source"],
                },
                format="multipart",
            )
            latency_ms = (time.perf_counter() - started) * 1000.0
        expect(response, 201, f"upload of {row['path']}")
        detail = client.get(reverse("api:study-detail", kwargs={"pk": response.data["id"]}))
        expect(detail, 200, f"study {response.data['id']}")
        study = detail.data
        if study["status"] != "predicted" or study["prediction"] is None:
            raise BenchError(f"study {study['id']} is {study['status']} after upload: {study['error']}")
        uploads.append(
            {
                "study_id": study["id"],
                "source": row["source"],
                "label": row["label"],
                "predicted": study["prediction"]["label"],
                "confidence": study["prediction"]["confidence"],
                "probabilities": study["prediction"]["probabilities"],
                "model_version": study["prediction"]["model_version"],
                "inference_ms": study["prediction"]["inference_ms"],
                "latency_ms": latency_ms,
            }
        )
    return uploads


def review_studies(client: "APIClient", uploads: list[dict[str, Any]]) -> dict[str, int]:
    """The reviewer gives each uploaded study its true label: a confirmation or a correction."""
    from django.urls import reverse

    for upload in uploads:
        response = client.post(
            reverse("api:study-review-create", kwargs={"pk": upload["study_id"]}),
            {"label": upload["label"], "comment": "bench: true label from labels.csv"},
            format="json",
        )
        expect(response, 201, f"review of study {upload['study_id']}")
    confirmed = sum(upload["predicted"] == upload["label"] for upload in uploads)
    return {"n": len(uploads), "confirmed": confirmed, "corrected": len(uploads) - confirmed}


def prediction_summary(uploads: list[dict[str, Any]], class_names: list[str]) -> dict[str, dict[str, Any]]:
    """Accuracy and per-class sensitivity of the stored predictions, per source and over all uploads."""
    groups = {
        source: [u for u in uploads if u["source"] == source] for source in sorted({u["source"] for u in uploads})
    }
    summary = {}
    for source, group in {**groups, "all": uploads}.items():
        support = Counter(u["label"] for u in group)
        hits = Counter(u["label"] for u in group if u["predicted"] == u["label"])
        summary[source] = {
            "n": len(group),
            "accuracy": sum(hits.values()) / len(group),
            "predicted": dict(Counter(u["predicted"] for u in group)),
            "per_class": {
                name: {"support": support[name], "sensitivity": hits[name] / support[name] if support[name] else None}
                for name in class_names
            },
        }
    return summary


def latency_summary(uploads: list[dict[str, Any]]) -> dict[str, float | int]:
    latencies = [u["latency_ms"] for u in uploads]
    warm = latencies[1:] or latencies
    return {
        "n": len(latencies),
        "first_ms": latencies[0],
        "mean_ms": statistics.fmean(latencies),
        "mean_after_first_ms": statistics.fmean(warm),
        "median_ms": statistics.median(latencies),
        "max_ms": max(latencies),
        "mean_model_inference_ms": statistics.fmean(u["inference_ms"] for u in uploads),
    }


def pooled_accuracy(metrics: dict, sources: list[str]) -> tuple[float | None, int]:
    """Accuracy over the test images of `sources` together, from the per-source results, and their number."""
    parts = [(r["n"], r["accuracy"]) for s, r in (metrics.get("per_source") or {}).items() if s in sources]
    total = sum(n for n, _ in parts)
    if not total or any(accuracy is None for _, accuracy in parts):
        return None, total
    return sum(n * accuracy for n, accuracy in parts) / total, total


def compare(a: float | None, b: float | None, n: int | None = None) -> dict[str, float | int | None]:
    """A's and B's value of one measure, and B/A where both are defined and A is not 0."""
    return {"a": a, "b": b, "b_over_a": None if a is None or b is None or not a else b / a, "n": n}


def pooled_compare(metrics_a: dict, metrics_b: dict, sources: list[str]) -> dict[str, float | int | None]:
    (a, n), (b, _) = pooled_accuracy(metrics_a, sources), pooled_accuracy(metrics_b, sources)
    return compare(a, b, n)


def version_info(run: "TrainingRun") -> dict[str, Any]:
    version = run.model_version
    return {
        "run_id": run.pk,
        "name": version.name,
        "status": version.status,
        "gate_decision": version.gate_decision,
        "hyperparameters": run.hyperparameters,
        "snapshot_counts": run.snapshot.counts,
        "metrics": version.metrics,
    }


def hyperparameter_overrides(args: argparse.Namespace) -> dict[str, int]:
    """The training settings given on the command line, for every run of the benchmark."""
    return {k: v for k, v in (("epochs", args.epochs), ("input_size", args.input_size)) if v is not None}


def run_loop(args: argparse.Namespace, watch: Stopwatch, workdir: Path) -> dict[str, Any]:
    train_sources = [s for s in args.train_sources.split(",") if s]
    new_sources = [s for s in args.new_sources.split(",") if s]
    data = args.data.resolve()
    rows = read_rows(data, train_sources, new_sources)
    overrides = hyperparameter_overrides(args)
    setup_django(workdir)
    from django.conf import settings

    from training.selectors import model_version_get_active

    class_names = list(settings.CLASS_NAMES)

    with watch.step("1 import train sources"):
        imported = import_sources(data, train_sources)
    with watch.step("2 train version A"):
        run_a = train_version(overrides)
    if not run_a.model_version.is_active:
        raise BenchError(f"version A was not activated: {run_a.model_version.gate_decision}")
    with watch.step("3 upload new sources through the API (A predicts)"):
        uploads = upload_studies(api_client("uploader", new_sources), data, rows)
    with watch.step("4 review uploads with their true labels"):
        reviews = review_studies(api_client("reviewer", new_sources), uploads)
    with watch.step("5 retrain: version B"):
        run_b = train_version(overrides)

    metrics_b = run_b.model_version.metrics
    comparison = metrics_b.get("active_comparison") or {}
    metrics_a = comparison.get("active_metrics") or {}
    active = model_version_get_active()
    return {
        "settings": {
            "data": str(data),
            "train_sources": train_sources,
            "new_sources": new_sources,
            "hyperparameter_overrides": overrides,
            "class_names": class_names,
            "bootstrap_rounds": settings.TRAINING["BOOTSTRAP_ROUNDS"],
        },
        "timings_s": watch.seconds,
        "imported_by_source": imported,
        "version_a": version_info(run_a),
        "uploads": {
            "latency": latency_summary(uploads),
            "version_a_on_uploads": prediction_summary(uploads, class_names),
            "studies": uploads,
        },
        "reviews": reviews,
        "version_b": version_info(run_b),
        "final_test_split": {"a": metrics_a, "b": {k: v for k, v in metrics_b.items() if k != "active_comparison"}},
        "new_sources_without_test_patients": [s for s in new_sources if s not in (metrics_b.get("per_source") or {})],
        "gate": {
            "promoted": run_b.model_version.is_active,
            "reason": run_b.model_version.gate_decision,
            "active_at_end": active.name if active else None,
        },
        "b_vs_a": {
            "new-source test accuracy": pooled_compare(metrics_a, metrics_b, new_sources),
            "train-source test accuracy": pooled_compare(metrics_a, metrics_b, train_sources),
            "test accuracy": compare(metrics_a.get("accuracy"), metrics_b.get("accuracy"), metrics_b.get("n")),
            "test macro AUC": compare(metrics_a.get("macro_auc"), metrics_b.get("macro_auc"), metrics_b.get("n")),
            "training images": compare(
                run_a.snapshot.counts.get("by_split", {}).get("train"),
                run_b.snapshot.counts.get("by_split", {}).get("train"),
            ),
            "training time (s)": compare(watch.seconds["2 train version A"], watch.seconds["5 retrain: version B"]),
        },
        "note": HONEST_NOTE,
    }


def halves_by_patient(rows: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The site's rows split by patient into a half that is reviewed and a half that judges,
    alternating within each class (a patient's first label) in the order of a hash of its key."""
    first_label: dict[str, str] = {}
    for row in rows:
        first_label.setdefault(row["patient"], row["label"])
    learn: set[str] = set()
    for label in sorted(set(first_label.values())):
        patients = sorted(
            (p for p, first in first_label.items() if first == label),
            key=lambda p: hashlib.sha256(p.encode()).hexdigest(),
        )
        learn.update(patients[0::2])
    return [r for r in rows if r["patient"] in learn], [r for r in rows if r["patient"] not in learn]


def judge_summary(uploads: list[dict[str, Any]], class_names: list[str]) -> dict[str, Any]:
    """Accuracy, per-class recall and COVID AUC of one version's answers on the judging half."""
    from sklearn.metrics import roc_auc_score

    summary = prediction_summary(uploads, class_names)["all"]
    is_covid = [u["label"] == "covid" for u in uploads]
    scores = [u["probabilities"]["covid"] for u in uploads]
    summary["covid_auc"] = roc_auc_score(is_covid, scores) if 0 < sum(is_covid) < len(is_covid) else None
    return summary


def answers(client: "APIClient", study_ids: list[int], rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Each study's newest prediction as the API shows it."""
    from django.urls import reverse

    result = []
    for study_id, row in zip(study_ids, rows, strict=True):
        detail = client.get(reverse("api:study-detail", kwargs={"pk": study_id}))
        expect(detail, 200, f"study {study_id}")
        prediction = detail.data["prediction"]
        result.append(
            {
                "study_id": study_id,
                "source": row["source"],
                "label": row["label"],
                "predicted": prediction["label"],
                "probabilities": prediction["probabilities"],
                "model_version": prediction["model_version"],
            }
        )
    return result


def run_new_site(args: argparse.Namespace, watch: Stopwatch, workdir: Path) -> dict[str, Any]:
    data = args.data.resolve()
    with (data / "labels.csv").open(newline="") as handle:
        all_rows = list(csv.DictReader(handle))
    sources = sorted({row["source"] for row in all_rows})
    if args.site not in sources:
        raise BenchError(f"unknown site {args.site}; labels.csv has {', '.join(sources)}.")
    train_sources = [s for s in sources if s != args.site]
    learn_rows, judge_rows = halves_by_patient([r for r in all_rows if r["source"] == args.site])
    overrides = hyperparameter_overrides(args)
    setup_django(workdir)
    from django.conf import settings
    from django.urls import reverse

    from training.models import TrainingRun
    from training.selectors import model_version_get_active

    class_names = list(settings.CLASS_NAMES)
    if args.start == "starter":
        with watch.step("1-2 import the bundled samples and activate the starter model (a fresh clone)"):
            imported = import_sources(REPO_ROOT / "samples", sorted({r["source"] for r in samples_rows()}))
            version_a = starter_activate()
            train_sources = sorted(imported)
        info_a = {"name": version_a.name, "imported_from": "models/starter", "metrics": version_a.metrics}
    else:
        with watch.step("1 import the other sources"):
            imported = import_sources(data, train_sources)
        with watch.step("2 train version A (from scratch)"):
            run_a = train_version({**overrides, "warm_start": False})
        version_a, info_a = run_a.model_version, version_info(run_a)
    uploader, reviewer = api_client("uploader", [args.site]), api_client("reviewer", [args.site])
    staff = staff_client()
    with watch.step("3 upload the judging half (A predicts; never reviewed)"):
        judged = upload_studies(uploader, data, judge_rows)
    judge_ids = [u["study_id"] for u in judged]
    before = judged  # A's answers, read back by upload_studies
    with watch.step("4 upload and review the learning half"):
        learned = upload_studies(uploader, data, learn_rows)
        reviews = review_studies(reviewer, learned)
    with watch.step("5 POST /api/training-runs/ (fine-tunes the served model)"):
        response = staff.post(reverse("api:training-run-list"), overrides, format="json")
        expect(response, 202, "starting a training run")
        run_b = TrainingRun.objects.get(pk=response.data["id"])
        if run_b.status != TrainingRun.Status.SUCCEEDED:
            raise BenchError(f"training run {run_b.pk} ended {run_b.status}: {run_b.error}")
    # A promotion re-predicts every unreviewed study (queue "repredict"; inline here), the judging half included.
    after = answers(uploader, judge_ids, judge_rows)
    version_b = run_b.model_version
    version_b.refresh_from_db()
    active = model_version_get_active()
    metrics_b = version_b.metrics
    return {
        "scenario": "new-site",
        "settings": {
            "data": str(data),
            "site": args.site,
            "start": args.start,
            "train_sources": train_sources,
            "hyperparameter_overrides": overrides,
            "class_names": class_names,
        },
        "timings_s": watch.seconds,
        "imported_by_source": imported,
        "halves": {
            "learn": {"images": len(learn_rows), "patients": len({r["patient"] for r in learn_rows})},
            "judge": {"images": len(judge_rows), "patients": len({r["patient"] for r in judge_rows})},
        },
        "reviews": reviews,
        "version_a": info_a,
        "version_b": version_info(run_b),
        "judge_half": {"a": judge_summary(before, class_names), "served_after": judge_summary(after, class_names)},
        "final_test_split": {
            "a": (metrics_b.get("active_comparison") or {}).get("active_metrics") or {},
            "b": {k: v for k, v in metrics_b.items() if k != "active_comparison"},
        },
        "gate": version_b.gate,
        "served": {
            "before": version_a.name,
            "after": active.name if active else None,
            "judge_half_answered_by": sorted({str(u["model_version"]) for u in after}),
        },
        "note": HONEST_NOTE,
    }


def samples_rows() -> list[dict[str, str]]:
    with (REPO_ROOT / "samples" / "labels.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def starter_activate() -> "ModelVersion":
    """The bundled starter model, registered and activated as `make run` does on first start."""
    from django.core.management import call_command

    from training.selectors import model_version_get_active

    call_command("import_model", str(REPO_ROOT / "models" / "starter"), "--activate", stdout=io.StringIO())
    return model_version_get_active()


def staff_client() -> "APIClient":
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from rest_framework.test import APIClient

    user = get_user_model().objects.create_user(username="bench-staff", is_staff=True)
    user.groups.add(Group.objects.get(name="ml-lead"))  # the permission to start training runs
    client = APIClient()
    client.force_authenticate(user)
    return client


def print_new_site_report(report: dict[str, Any]) -> None:
    settings = report["settings"]
    class_names = settings["class_names"]
    print("\n=== Learning-loop benchmark: a new site ===")
    if settings.get("start") == "starter":
        print(
            f"site {settings['site']}; version A is the bundled starter model, beside the bundled samples "
            f"({', '.join(settings['train_sources'])}): a fresh clone without ../shared"
        )
    else:
        print(f"site {settings['site']} left out of version A (trained on {', '.join(settings['train_sources'])})")
    halves = report["halves"]
    print(
        f"learning half: {halves['learn']['images']} images of {halves['learn']['patients']} patients, uploaded and "
        f"reviewed; judging half: {halves['judge']['images']} images of {halves['judge']['patients']} patients, "
        "uploaded, never reviewed"
    )
    print("\n-- Timings --")
    for name, seconds in report["timings_s"].items():
        print(f"{name:<60}{seconds:>9.1f} s")
    print(f"\n-- The judging half of {settings['site']}: version A -> the served model after the run --")
    a, b = report["judge_half"]["a"], report["judge_half"]["served_after"]
    print(f"{'':<24}{'A':>8}{'after':>8}")
    print(f"{'accuracy':<24}{fmt(a['accuracy']):>8}{fmt(b['accuracy']):>8}")
    print(f"{'COVID AUC':<24}{fmt(a['covid_auc']):>8}{fmt(b['covid_auc']):>8}")
    for name in class_names:
        support = a["per_class"][name]["support"]
        if support:
            print(
                f"{'recall ' + name + f' (n={support})':<24}"
                f"{fmt(a['per_class'][name]['sensitivity']):>8}{fmt(b['per_class'][name]['sensitivity']):>8}"
            )
    print(f"predicted by A {a['predicted']}; after {b['predicted']}")
    print("\n-- Both versions on the frozen test split (the same cases) --")
    for line in source_table(report, new_sources=[settings["site"]]):
        print(line)
    gate = report["gate"] or {}
    print("\n-- Gate --")
    print(f"{'promote' if gate.get('promote') else 'keep as candidate'}: {gate.get('reason')}")
    for row in gate.get("comparisons", []):
        print(
            f"  {row['scope']:<18}{row['metric']:<24}n={row['patients']:<4} {row['active']:.3f} -> "
            f"{row['candidate']:.3f}  diff {row['difference']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]  "
            f"{row['verdict']}"
        )
    served = report["served"]
    print(f"served model: {served['before']} -> {served['after']}")
    print(f"the judging half is now answered by: {', '.join(served['judge_half_answered_by'])}")
    print(f"\nNote: {report['note']}")


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def fmt_ci(metrics: dict, key: str) -> str:
    low, high = (metrics.get("ci") or {}).get(key) or (None, None)
    return f"{fmt(metrics.get(key))} [{fmt(low)}, {fmt(high)}]"


def source_table(report: dict[str, Any], new_sources: list[str] | None = None) -> list[str]:
    """Both versions per source on the final frozen test split; '-' where a class is absent."""
    class_names = report["settings"]["class_names"]
    new_sources = report["settings"]["new_sources"] if new_sources is None else new_sources
    by_version = report["final_test_split"]
    header = f"{'source':<20}{'ver':>4}{'n':>6}{'accuracy':>10}{'macro AUC':>11}" + "".join(
        f"{'sens ' + name:>16}" for name in class_names
    )
    lines = [header, "-" * len(header)]
    sources = sorted(set(by_version["a"].get("per_source") or {}) | set(by_version["b"].get("per_source") or {}))
    for source in sources:
        for index, version in enumerate(("a", "b")):
            result = (by_version[version].get("per_source") or {}).get(source)
            label = (f"{source} *" if source in new_sources else source) if index == 0 else ""
            if result is None:
                lines.append(f"{label:<20}{version.upper():>4}   (not evaluated)")
                continue
            sensitivities = "".join(
                f"{fmt(result['per_class'][name]['sensitivity']) if result['per_class'][name]['support'] else '-':>16}"
                for name in class_names
            )
            lines.append(
                f"{label:<20}{version.upper():>4}{result['n']:>6}{fmt(result['accuracy']):>10}"
                f"{fmt(result['macro_auc']):>11}{sensitivities}"
            )
    for version in ("a", "b"):
        metrics = by_version[version]
        if metrics:
            sensitivities = "".join(f"{fmt(metrics['per_class'][name]['sensitivity']):>16}" for name in class_names)
            lines.append(
                f"{'all' if version == 'a' else '':<20}{version.upper():>4}{metrics['n']:>6}"
                f"{fmt(metrics['accuracy']):>10}{fmt(metrics['macro_auc']):>11}{sensitivities}"
            )
    lines.append("* new source: uploaded through the API and reviewed")
    return lines


def print_report(report: dict[str, Any]) -> None:
    settings, a, b = report["settings"], report["version_a"], report["version_b"]
    final_a, final_b = report["final_test_split"]["a"], report["final_test_split"]["b"]
    uploads, latency = report["uploads"], report["uploads"]["latency"]
    hyper = a["hyperparameters"]
    print("\n=== Learning-loop benchmark ===")
    print(f"data {settings['data']}")
    print(f"train sources {', '.join(settings['train_sources'])}; new sources {', '.join(settings['new_sources'])}")
    print(
        f"{hyper['backbone']} ({hyper['weights']} weights), {hyper['input_size']} px, up to {hyper['epochs']} epochs, "
        f"batch {hyper['batch_size']}, seed {hyper['seed']}; {settings['bootstrap_rounds']} bootstrap rounds"
    )

    print("\n-- Timings --")
    for name, seconds in report["timings_s"].items():
        print(f"{name:<52}{seconds:>9.1f} s")
    print(
        f"API upload incl. inline prediction and heatmap, per image: mean {latency['mean_ms']:.0f} ms "
        f"(first, loading the model: {latency['first_ms']:.0f} ms; the rest: {latency['mean_after_first_ms']:.0f} ms), "
        f"median {latency['median_ms']:.0f} ms, max {latency['max_ms']:.0f} ms over {latency['n']} images; "
        f"model forward pass alone {latency['mean_model_inference_ms']:.1f} ms"
    )

    print("\n-- Data --")
    print(f"imported (reviewed) studies: {report['imported_by_source']}")
    for label, info in (("A", a), ("B", b)):
        print(
            f"version {label}: {info['name']}, snapshot {info['snapshot_counts'].get('by_split')}, "
            f"{info['metrics'].get('epochs_run')} epochs run (best {info['metrics'].get('best_epoch')})"
        )
    own = a["metrics"]
    print(
        f"version A on its own test split (train sources only): n={own.get('n')}, "
        f"accuracy {fmt_ci(own, 'accuracy')}, macro AUC {fmt_ci(own, 'macro_auc')}"
    )

    print("\n-- What the deployed version A did on the new sources' uploads, before review --")
    for source, result in uploads["version_a_on_uploads"].items():
        sensitivities = ", ".join(
            f"{name} {fmt(value['sensitivity'], 2)} (n={value['support']})"
            for name, value in result["per_class"].items()
            if value["support"]
        )
        print(
            f"{source:<20} n={result['n']:<4} accuracy {fmt(result['accuracy'])}; sensitivity {sensitivities}; "
            f"predicted {result['predicted']}"
        )
    reviews = report["reviews"]
    print(f"reviews: {reviews['n']} submitted, {reviews['confirmed']} confirmed, {reviews['corrected']} corrected")

    print("\n-- Both versions on the final frozen test split (the same images) --")
    if not final_a:
        print("version A could not be scored on the final test split (see B's gate decision)")
    for line in source_table(report):
        print(line)
    for label, metrics in (("A", final_a), ("B", final_b)):
        if metrics:
            print(
                f"overall {label}: accuracy {fmt_ci(metrics, 'accuracy')}, macro AUC {fmt_ci(metrics, 'macro_auc')}, "
                f"COVID sensitivity at 95% specificity {fmt_ci(metrics, 'covid_sensitivity_at_95_specificity')} "
                "(95% CIs from resampling patients)"
            )
    for source in report["new_sources_without_test_patients"]:
        print(f"NOTE: no patient of {source} fell into the frozen test split; its effect is not measured here.")

    print("\n-- B against A, this run --")
    for name, value in report["b_vs_a"].items():
        images = f" on {value['n']} test images" if value["n"] is not None else ""
        print(f"{name:<28} A {fmt(value['a']):>8}  B {fmt(value['b']):>8}  B/A = {fmt(value['b_over_a'], 2)}{images}")

    gate = report["gate"]
    print("\n-- Gate --")
    print(f"version B {'promoted' if gate['promoted'] else 'kept as candidate'}: {gate['reason']}")
    print(f"active at the end: {gate['active_at_end']}")

    print("\n-- Shortcut warnings --")
    for label, info, where in (("A", a, "its own test split"), ("B", b, "the final test split")):
        reasons = (info["metrics"].get("shortcut") or {}).get("reasons") or []
        print(f"version {label} (on {where}): {len(reasons) or 'none'}")
        for reason in reasons:
            print(f"  - {reason}")

    print(f"\nNote: {report['note']}")


def main() -> int:
    args = parse_args()
    watch = Stopwatch()
    try:
        workdir, temporary = prepare_workdir(args.workdir)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    try:
        report = (run_new_site if args.scenario == "new-site" else run_loop)(args, watch, workdir)
    except BenchError as exc:
        print(f"benchmark failed at step '{watch.current}': {exc}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print(f"benchmark failed at step '{watch.current}'", file=sys.stderr)
        return 1
    finally:
        if temporary and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"work folder kept: {workdir}")
    (print_new_site_report if args.scenario == "new-site" else print_report)(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"report written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
