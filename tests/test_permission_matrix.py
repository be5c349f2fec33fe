"""Who may do what: every API endpoint and page x anonymous / no role / uploader / reviewer / site lead /
staff / superuser, across two sites.

The users under test belong to site A (or to no site); study A was uploaded at site A by the uploader
under test, study B at site B by someone else. Staff is ``is_staff`` plus the ``ml-lead`` group (train,
promote, override, export) and no site. Each request runs in a savepoint rolled back afterwards, so
one role's write does not change what the next one meets."""

import io

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.test import Client
from PIL import Image
from rest_framework.test import APIClient

from tests.factories import (
    ModelVersionFactory,
    PredictionFactory,
    UserFactory,
    ml_lead,
    reviewer,
    site_lead,
    site_named,
    uploader,
)
from tests.images import png_bytes
from training.models import DatasetSnapshot, TrainingRun

ROLES = ("anonymous", "no_role", "uploader", "reviewer", "lead", "staff", "superuser")
ALL = 200
OVERRIDE = {"reason": "Matrix test: override the gate on purpose.", "override": True}

# (method, path template, data, expected codes in the order of ROLES)
API = {
    "list studies": ("get", "/api/studies/", None, (401, 403, 200, 200, 200, 200, 200)),
    "upload a study": ("upload", "/api/studies/", None, (401, 403, 201, 201, 201, 403, 201)),
    "study at my site": ("get", "/api/studies/{a}/", None, (401, 403, 200, 200, 200, 404, 200)),
    "study at the other site": ("get", "/api/studies/{b}/", None, (401, 403, 404, 404, 404, 404, 200)),
    "delete a study": ("delete", "/api/studies/{a}/", None, (401, 403, 403, 403, 204, 404, 204)),
    "delete a study at the other site": ("delete", "/api/studies/{b}/", None, (401, 403, 404, 404, 404, 404, 204)),
    "image": ("get", "/api/studies/{a}/image/", None, (401, 403, 200, 200, 200, 404, 200)),
    "image of the other site": ("get", "/api/studies/{b}/image/", None, (401, 403, 404, 404, 404, 404, 200)),
    "thumbnail": ("get", "/api/studies/{a}/image/?size=64", None, (401, 403, 200, 200, 200, 404, 200)),
    "heatmap": ("get", "/api/studies/{a}/heatmap/", None, (401, 403, 200, 200, 200, 404, 200)),
    "review": ("post", "/api/studies/{a}/reviews/", {"label": "normal"}, (401, 403, 403, 201, 201, 403, 201)),
    "review at the other site": (
        "post",
        "/api/studies/{b}/reviews/",
        {"label": "normal"},
        (401, 403, 403, 404, 404, 403, 201),
    ),
    "list models": ("get", "/api/models/", None, (401, 403, 200, 200, 200, 200, 200)),
    "active model": ("get", "/api/models/active/", None, (401, 403, 200, 200, 200, 200, 200)),
    "agreement": ("get", "/api/models/agreement/", None, (401, 403, 200, 200, 200, 200, 200)),
    "model": ("get", "/api/models/{candidate}/", None, (401, 403, 200, 200, 200, 200, 200)),
    "promote with override": (
        "post",
        "/api/models/{candidate}/promote/",
        OVERRIDE,
        (401, 403, 403, 403, 403, 200, 200),
    ),
    "list training runs": ("get", "/api/training-runs/", None, (401, 403, 200, 200, 200, 200, 200)),
    "start a training run": ("post", "/api/training-runs/", {}, (401, 403, 403, 403, 403, 202, 202)),
    "training run": ("get", "/api/training-runs/{run}/", None, (401, 403, 200, 200, 200, 200, 200)),
    "plot": ("get", "/api/training-runs/{run}/plots/roc/", None, (401, 403, 200, 200, 200, 200, 200)),
    "list datasets": ("get", "/api/datasets/", None, (401, 403, 200, 200, 200, 200, 200)),
    "dataset": ("get", "/api/datasets/{snapshot}/", None, (401, 403, 200, 200, 200, 200, 200)),
    "export": ("get", "/api/datasets/{snapshot}/export/", None, (401, 403, 403, 403, 403, 200, 200)),
    "review queue": ("get", "/api/review-queue/", None, (401, 403, 403, 200, 200, 403, 200)),
    "adjudication queue": ("get", "/api/adjudication-queue/", None, (401, 403, 403, 403, 200, 403, 200)),
    "stats": ("get", "/api/stats/", None, (401, 403, 200, 200, 200, 200, 200)),
    "audit trail": ("get", "/api/audit-events/", None, (401, 403, 403, 403, 200, 403, 200)),
    "audit trail as CSV": ("get", "/api/audit-events/export/", None, (401, 403, 403, 403, 200, 403, 200)),
    "schema": ("get", "/api/schema/", None, (ALL,) * 7),
}
PAGES = {
    "studies page": ("get", "/", None, (302, 403, 200, 200, 200, 200, 200)),
    "upload page": ("get", "/studies/upload/", None, (302, 403, 200, 200, 200, 403, 200)),
    "study page": ("get", "/studies/{a}/", None, (302, 404, 200, 200, 200, 404, 200)),
    "study page of the other site": ("get", "/studies/{b}/", None, (302, 404, 404, 404, 404, 404, 200)),
    "review form": ("post", "/studies/{a}/review/", {"label": "normal"}, (302, 403, 403, 302, 302, 403, 302)),
    "requeue": ("post", "/studies/{a}/requeue/", {}, (302, 403, 403, 302, 302, 403, 302)),
    "review queue": ("get", "/review/", None, (302, 403, 403, 200, 200, 403, 200)),
    "reading page": ("get", "/review/read/", None, (302, 403, 403, 200, 200, 403, 200)),
    "adjudication page": ("get", "/adjudication/", None, (302, 403, 403, 403, 200, 403, 200)),
    "dashboard page": ("get", "/dashboard/", None, (302, 403, 200, 200, 200, 200, 200)),
    "models page": ("get", "/models/", None, (302, 403, 200, 200, 200, 200, 200)),
    "model page": ("get", "/models/{candidate}/", None, (302, 403, 200, 200, 200, 200, 200)),
    "activate form": (
        "post",
        "/models/{candidate}/activate/",
        {"reason": "Matrix test: override the gate on purpose.", "override": "on"},
        (302, 403, 403, 403, 403, 302, 302),
    ),
    "train form": ("post", "/training-runs/new/", {}, (302, 403, 403, 403, 403, 302, 302)),
    "training run page": ("get", "/training-runs/{run}/", None, (302, 403, 200, 200, 200, 200, 200)),
    "audit trail page": ("get", "/audit/", None, (302, 403, 403, 403, 200, 403, 200)),
    "admin": ("get", "/admin/", None, (302, 302, 302, 302, 302, 200, 200)),
}


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def world(db) -> dict:
    users = {
        "anonymous": None,
        "no_role": UserFactory(),
        "uploader": uploader(site_name="site-a"),
        "reviewer": reviewer(site_name="site-a"),
        "lead": site_lead(site_name="site-a"),
        "staff": ml_lead(),
        "superuser": UserFactory(is_staff=True, is_superuser=True),
    }
    site_named("site-b")
    heatmap = ContentFile(_jpeg(), name="heat.jpg")
    a = PredictionFactory(study__source="site-a", study__uploaded_by=users["uploader"], heatmap=heatmap).study
    b = PredictionFactory(study__source="site-b", study__uploaded_by=uploader(site_name="site-b")).study
    active = ModelVersionFactory(is_active=True, status="active")
    candidate = ModelVersionFactory()
    snapshot = DatasetSnapshot.objects.create(content_hash="0" * 64, counts={})
    plot = default_storage.save("plots/roc.png", ContentFile(png_bytes()))
    run = TrainingRun.objects.create(status="succeeded", plots={"roc": plot}, model_version=active)
    ids = {"a": a.pk, "b": b.pk, "candidate": candidate.pk, "run": run.pk, "snapshot": snapshot.pk}
    return {"users": users, "ids": ids}


def _request(client, method: str, path: str, data):
    if method == "upload":
        image = ContentFile(png_bytes(seed=99), name="cxr.png")
        return client.post(path, {"image": image, "source": "site-a"}, format="multipart")
    if method == "delete":
        return client.delete(path)
    if method == "post":
        return client.post(path, data, format="json") if isinstance(client, APIClient) else client.post(path, data)
    return client.get(path)


def _codes(world: dict, method: str, template: str, data, *, api: bool) -> tuple[int, ...]:
    codes = []
    for role in ROLES:
        client = APIClient() if api else Client()
        user = world["users"][role]
        if user is not None:
            client.force_login(user)
        with transaction.atomic():
            codes.append(_request(client, method, template.format(**world["ids"]), data).status_code)
            transaction.set_rollback(True)
    return tuple(codes)


@pytest.mark.parametrize("name", list(API))
def test_every_api_endpoint_answers_each_role_as_the_matrix_says(world, name):
    method, template, data, expected = API[name]
    assert dict(zip(ROLES, _codes(world, method, template, data, api=True), strict=True)) == dict(
        zip(ROLES, expected, strict=True)
    )


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_answers_each_role_as_the_matrix_says(world, name):
    method, template, data, expected = PAGES[name]
    assert dict(zip(ROLES, _codes(world, method, template, data, api=False), strict=True)) == dict(
        zip(ROLES, expected, strict=True)
    )
