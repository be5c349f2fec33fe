"""Makes the README's screenshots of the reading pages from the sample X-rays (not part of the suite).

    .venv/bin/pytest docs/screenshots -q

writes docs/queue.png, docs/viewer.png, docs/study.png and docs/dashboard.png (quantised PNGs)."""

import csv
import hashlib
import io
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings as django_settings
from django.core.files.base import ContentFile
from django.utils import timezone
from PIL import Image

from inference.preprocessing import load_grayscale
from inference.services import heatmap_overlay_jpeg
from studies.models import Study
from studies.services import review_submit
from studies.sites import membership_set
from tests.factories import ModelVersionFactory, PatientFactory, PredictionFactory, member, site_named

pytestmark = pytest.mark.django_db(transaction=True)
DOCS = Path(__file__).resolve().parent.parent


def _save(page, name: str) -> None:
    image = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(DOCS / name, optimize=True)


def _heatmap(gray: np.ndarray, rng: np.random.Generator) -> bytes:
    yy, xx = np.mgrid[0:64, 0:64] / 64
    cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.35, 0.65)
    return heatmap_overlay_jpeg(gray, np.exp(-(((xx - cx) / 0.15) ** 2 + ((yy - cy) / 0.2) ** 2)))


def _demo_data() -> list[Study]:
    rng = np.random.default_rng(7)
    rows = list(csv.DictReader((django_settings.SAMPLES_DIR / "labels.csv").open()))
    rows = rows[::3][:14]
    old = ModelVersionFactory(
        name="cnn-2026-10-02",
        metrics={
            "per_source": {"hannover": {"n": 40, "accuracy": 0.71}, "kaggle-pediatric": {"n": 120, "accuracy": 0.86}}
        },
    )
    new = ModelVersionFactory(
        name="cnn-2026-11-18",
        is_active=True,
        status="active",
        metrics={
            "per_source": {"hannover": {"n": 52, "accuracy": 0.79}, "kaggle-pediatric": {"n": 131, "accuracy": 0.88}}
        },
    )
    assert old
    studies = []
    for row in rows:
        data = (django_settings.SAMPLES_DIR / row["path"]).read_bytes()
        gray = load_grayscale(data)
        site = site_named(row["source"])
        study = Study.objects.create(
            site=site,
            patient=PatientFactory(site=site),
            image=ContentFile(data, name="upload.jpg"),
            sha256=hashlib.sha256(data).hexdigest(),
            width=gray.shape[1],
            height=gray.shape[0],
            source=row["source"],
            view=row["view"],
            status=Study.Status.PREDICTED,
        )
        p = rng.dirichlet([4 if name == row["label"] else 1 for name in ("covid", "normal", "pneumonia")])
        probabilities = dict(zip(("covid", "normal", "pneumonia"), (round(float(x), 3) for x in p), strict=True))
        label = max(probabilities, key=probabilities.get)
        PredictionFactory(
            study=study,
            model_version=new,
            probabilities=probabilities,
            label=label,
            confidence=probabilities[label],
            entropy=float(-(p * np.log(p)).sum()),
            heatmap=ContentFile(_heatmap(gray, rng), name="heat.jpg"),
        )
        Study.objects.filter(pk=study.pk).update(uploaded_at=timezone.now() - timedelta(days=int(rng.integers(0, 9))))
        studies.append(study)
    return studies


def _member_everywhere(role: str, username: str, studies: list[Study]):
    """A user holding ``role`` (reviewer, lead) at every site of the demo studies."""
    first, *others = sorted({study.site for study in studies}, key=lambda site: site.slug)
    user = member(role, username=username, site_name=first.name)
    for site in others:
        membership_set(user=user, site=site, role=role)
    return user


def test_screenshots(page, live_server, login, context, settings):
    settings.REVIEW_READS_REQUIRED = 2
    studies = _demo_data()
    ann, bob, cid = (_member_everywhere("reviewer", name, studies) for name in ("ann", "bob", "cid"))
    names = ("covid", "normal", "pneumonia")
    for i, study in enumerate(studies[:8]):
        truth = study.predictions.get().label
        review_submit(study=study, reviewer=ann, label=truth, reading_ms=4000 + 300 * i)
        review_submit(study=study, reviewer=bob, label=truth if i % 3 else names[(i + 1) % 3], reading_ms=6000)
        if i % 2:
            review_submit(study=study, reviewer=cid, label=truth if i % 5 else names[(i + 2) % 3], reading_ms=5000)
    judge = _member_everywhere("lead", "lead", studies)  # site leads adjudicate
    page.set_viewport_size({"width": 1200, "height": 760})

    login(cid)
    page.goto(f"{live_server.url}/review/?order=uncertainty")
    page.wait_for_function("() => [...document.images].every((img) => img.complete && img.naturalWidth)")
    _save(page, "queue.png")

    page.goto(f"{live_server.url}/review/read/")
    page.locator("[data-page=reader][data-study-id]").wait_for()
    page.locator("[data-viewer][data-loaded=true]").wait_for()
    page.locator("[data-viewer]").get_by_role("button", name="+").click()
    page.keyboard.press("h")
    page.locator("[data-viewer] [data-role=opacity]").fill("55")
    page.locator("[data-viewer] [data-role=preset]").select_option(label="Lung (dark detail)")
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(300)  # the large rendition replaces the quick one
    _save(page, "viewer.png")

    context.clear_cookies()
    login(judge)
    disagreement = Study.objects.filter(reading_state="disagreement").first()
    page.set_viewport_size({"width": 1200, "height": 1000})
    page.goto(f"{live_server.url}/studies/{disagreement.pk}/")
    page.locator("[data-viewer][data-loaded=true]").wait_for()
    _save(page, "study.png")

    page.set_viewport_size({"width": 1200, "height": 1900})
    page.goto(f"{live_server.url}/dashboard/")
    page.locator("[data-page=dashboard][data-loaded=true]").wait_for()
    _save(page, "dashboard.png")
