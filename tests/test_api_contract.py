"""The OpenAPI schema is a contract: schemathesis drives the WSGI app in-process with requests generated
from /api/schema/, as an anonymous client, an uploader, a reviewer and a site lead, and checks that no response
is a 5xx, every status code and body is the one the schema declares, and no schema-valid request is refused.

Examples are bounded (EXAMPLES per operation and role, deterministic) to keep this near a minute."""

import pytest
import schemathesis
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from knox.models import AuthToken
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from tests.factories import ModelVersionFactory, PredictionFactory, ReviewFactory, reviewer, site_lead, uploader
from tests.images import jpeg_bytes, png_bytes
from training.models import DatasetSnapshot, TrainingRun

EXAMPLES = 6
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    positive_data_acceptance,
]
# Refusals the schema cannot express, so a 400 there is correct, not a contract breach: an upload is
# schema-valid with any bytes as its image (whether they decode as an X-ray is beyond OpenAPI), and a
# login with any username and password (whether they match an account).
CONTENT_CHECKED = {"POST /api/studies/", "POST /api/auth/token/"}

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)
schema.config.generation.update(max_examples=EXAMPLES, deterministic=True, database="none")


@pytest.fixture
def keep_test_connection():
    """Like Django's test client: the request cycle must not close the test's database connection."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture(params=["anonymous", "uploader", "reviewer", "lead"])
def headers(request, db, keep_test_connection) -> dict:
    """Objects to find (ids start at 1 in each test), and the role's token."""
    study_uploader, study_reviewer, lead = uploader(), reviewer(), site_lead()
    for _ in range(2):
        study = PredictionFactory(study__uploaded_by=study_uploader).study
    ReviewFactory(study=study, reviewer=study_reviewer)
    version = ModelVersionFactory(is_active=True, status="active")
    plot = default_storage.save("plots/roc.png", ContentFile(png_bytes()))
    TrainingRun.objects.create(status="succeeded", plots={"roc": plot}, model_version=version)
    DatasetSnapshot.objects.create(content_hash="0" * 64, counts={})
    user = {"anonymous": None, "uploader": study_uploader, "reviewer": study_reviewer, "lead": lead}[request.param]
    if user is None:
        return {}
    _, token = AuthToken.objects.create(user=user)
    return {"Authorization": f"Token {token}"}


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_the_api_keeps_its_openapi_contract(case, headers):
    checks = [c for c in CHECKS if not (c is positive_data_acceptance and case.operation.label in CONTENT_CHECKED)]
    case.call_and_validate(headers=headers, checks=checks)


@pytest.fixture
def existing(db, keep_test_connection) -> dict:
    """One of everything, seen by a superuser: path parameters that name real objects."""
    from tests.factories import UserFactory

    data = {}
    study = PredictionFactory(heatmap=ContentFile(jpeg_bytes(), name="heat.jpg")).study
    ReviewFactory(study=study)
    version = ModelVersionFactory(is_active=True, status="active")
    plot = default_storage.save("plots/roc.png", ContentFile(png_bytes()))
    run = TrainingRun.objects.create(status="succeeded", plots={"roc": plot}, model_version=version)
    snapshot = DatasetSnapshot.objects.create(content_hash="0" * 64, counts={})
    _, token = AuthToken.objects.create(user=UserFactory(is_superuser=True, is_staff=True))
    data["ids"] = {
        "/api/studies/": study.pk,
        "/api/models/": version.pk,
        "/api/training-runs/": run.pk,
        "/api/datasets/": snapshot.pk,
    }
    data["headers"] = {"Authorization": f"Token {token}"}
    return data


GET_OPERATIONS = sorted(
    path for path, methods in schema.raw_schema["paths"].items() if "get" in methods and path != "/api/schema/"
)


@pytest.mark.parametrize("path", GET_OPERATIONS)
def test_every_read_answers_200_with_the_documented_body_for_an_existing_object(existing, path):
    prefix = next((prefix for prefix in existing["ids"] if path.startswith(prefix)), None)  # None: no {id}
    parameters = {"id": existing["ids"].get(prefix), "name": "roc"}
    operation = schema[path]["GET"]
    case = operation.Case(path_parameters={k: v for k, v in parameters.items() if f"{{{k}}}" in path})

    response = case.call_and_validate(headers=existing["headers"], checks=CHECKS)

    assert response.status_code == 200, response.text
