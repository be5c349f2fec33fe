"""The audit trail: uploads, imports and releases, image and heatmap views, reads, adjudications,
rejections and send-backs, dataset exports, deletions, model activations, logins and failed logins each leave
a row with the study's site and no patient identifier; refused requests leave none; reviews and audit rows
cannot be deleted in the admin."""

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.admin.sites import site as admin_site
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from studies.models import AccessEvent, Review, Study
from studies.services import (
    image_check,
    review_adjudicate,
    review_submit,
    study_delete,
    study_import,
    study_reject,
    study_release,
    study_send_back,
)
from tests.factories import (
    ModelVersionFactory,
    PredictionFactory,
    ReviewFactory,
    StudyFactory,
    UserFactory,
    ml_lead,
    reviewer,
    score_cases,
    site_lead,
    uploader,
)
from tests.images import png_bytes
from training.models import DatasetSnapshot
from training.services import model_version_promote, snapshot_create

pytestmark = pytest.mark.django_db


def _events() -> list[tuple[str, str, int | None]]:
    return list(AccessEvent.objects.order_by("id").values_list("username", "action", "study_id_ref"))


def test_viewing_an_image_a_thumbnail_and_a_heatmap_is_recorded_with_who_and_which_study(api_client):
    user = reviewer(username="reader-1")
    study = StudyFactory()
    prediction = PredictionFactory(study=study)
    prediction.heatmap.save("h.jpg", ContentFile(b"\xff\xd8\xff\xe0 heat"), save=True)
    api_client.force_authenticate(user)

    assert api_client.get(f"/api/studies/{study.pk}/image/").status_code == 200
    assert api_client.get(f"/api/studies/{study.pk}/image/?size=64").status_code == 200
    assert api_client.get(f"/api/studies/{study.pk}/heatmap/").status_code == 200

    assert _events() == [
        ("reader-1", "image", study.pk),
        ("reader-1", "image", study.pk),
        ("reader-1", "heatmap", study.pk),
    ]
    assert list(AccessEvent.objects.order_by("id").values_list("detail", flat=True))[:2] == ["full", "size=64"]
    assert AccessEvent.objects.first().address == "127.0.0.1"


def test_a_refused_image_request_leaves_no_audit_row(api_client):
    study = StudyFactory(source="other-site")
    api_client.force_authenticate(reviewer())  # a reviewer of another site
    assert api_client.get(f"/api/studies/{study.pk}/image/").status_code == 404
    assert not AccessEvent.objects.exists()


def test_a_dataset_export_and_a_study_deletion_are_recorded(api_client):
    study = StudyFactory()
    ReviewFactory(study=study, label="normal")
    snapshot = snapshot_create()
    api_client.force_authenticate(ml_lead(username="lead-1"))
    assert api_client.get(f"/api/datasets/{snapshot.pk}/export/").status_code == 200
    other = StudyFactory()
    other_id = other.pk
    study_delete(study=other, user=UserFactory(username="admin-1", is_superuser=True))

    assert _events() == [("lead-1", "export", None), ("admin-1", "delete", other_id)]
    assert AccessEvent.objects.get(action="delete").site.slug == other.source
    assert f"snapshot {snapshot.pk}" in AccessEvent.objects.get(action="export").detail


def test_reviews_and_audit_rows_cannot_be_deleted_in_the_admin():
    request = RequestFactory().get("/admin/")
    request.user = UserFactory(is_staff=True, is_superuser=True)
    assert not admin_site._registry[Review].has_delete_permission(request)
    assert not admin_site._registry[AccessEvent].has_delete_permission(request)
    assert not admin_site._registry[AccessEvent].has_change_permission(request)


def _trail() -> list[tuple[str, str, int | None, str | None, str]]:
    return list(
        AccessEvent.objects.order_by("id").values_list("username", "action", "study_id_ref", "site__slug", "detail")
    )


def test_an_upload_is_recorded_with_its_site_and_address_and_never_the_patient_reference(api_client):
    user = uploader(username="up-1", site_name="site-a")
    api_client.force_authenticate(user)
    image = SimpleUploadedFile("cxr.png", png_bytes())
    body = {"image": image, "patient_ref": "PSEUDO-4711", "notes": "cough", "source": "site-a"}

    response = api_client.post("/api/studies/", body, format="multipart")

    assert response.status_code == 201
    assert _trail() == [("up-1", "upload", response.json()["id"], "site-a", "queued")]
    assert AccessEvent.objects.get().address == "127.0.0.1"
    row = AccessEvent.objects.values().get()
    assert not any("PSEUDO-4711" in str(value) or "cough" in str(value) for value in row.values())


def test_reads_an_adjudication_a_send_back_and_a_rejection_are_recorded_with_who_and_what(settings):
    settings.REVIEW_READS_REQUIRED = 2
    study = PredictionFactory(study__source="site-a").study
    first, second = reviewer(username="r-1", site_name="site-a"), reviewer(username="r-2", site_name="site-a")
    lead = site_lead(username="lead-1", site_name="site-a")

    review_submit(study=study, reviewer=first, label="normal", address="10.0.0.1")
    review_submit(study=study, reviewer=second, label="covid", comment="GGO left", address="10.0.0.2")
    review_adjudicate(study=study, adjudicator=lead, label="covid", reason="Peripheral GGO", address="10.0.0.3")
    study_send_back(study=study, user=lead)
    study_reject(study=study, reviewer=first, reason="unreadable", comment="motion blur")

    assert _trail() == [
        ("r-1", "review", study.pk, "site-a", "normal, round 1"),
        ("r-2", "review", study.pk, "site-a", "covid, round 1"),
        ("lead-1", "adjudicate", study.pk, "site-a", "covid, round 1"),
        ("lead-1", "send_back", study.pk, "site-a", "round 2"),
        ("r-1", "reject", study.pk, "site-a", "unreadable"),
    ]
    assert list(AccessEvent.objects.order_by("id").values_list("address", flat=True)[:3]) == [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
    ]


def test_a_refused_read_leaves_no_audit_row():
    study = PredictionFactory(study__source="site-b").study
    with pytest.raises(PermissionDenied, match="Only reviewers or site leads of"):
        review_submit(study=study, reviewer=reviewer(site_name="site-a"), label="normal")
    assert not AccessEvent.objects.exists()


def test_an_import_and_the_release_of_a_held_study_are_recorded():
    importer = UserFactory(username="importer")
    checked = image_check(file=ContentFile(png_bytes(seed=5)), source="site-a")
    imported, _ = study_import(checked=checked, label="normal", reviewer=importer, source="site-a")
    held = StudyFactory(source="site-a", status=Study.Status.HELD)

    study_release(study=held, user=UserFactory(username="admin-1"), address="10.0.0.9")

    assert _trail() == [
        ("importer", "import", imported.pk, "site-a", "normal"),
        ("admin-1", "release", held.pk, "site-a", ""),
    ]


def test_a_promotion_and_an_override_are_recorded_with_who_and_which_models():
    snapshot = DatasetSnapshot.objects.create(content_hash="x" * 64)
    first, worse = ModelVersionFactory(name="v1"), ModelVersionFactory(name="v2", snapshot=snapshot)
    score_cases(first, snapshot, correct=30)
    score_cases(worse, snapshot, correct=20)
    lead = ml_lead(username="ml-1")

    model_version_promote(model_version=first, user=None, reason="first")
    model_version_promote(
        model_version=worse, user=lead, reason="new scanner at site-a", override=True, address="10.0.0.4"
    )

    assert _trail() == [
        ("(system)", "promote", None, None, f"model v1 (model {first.pk}), was none"),
        ("ml-1", "override", None, None, f"model v2 (model {worse.pk}), was v1"),
    ]
    assert AccessEvent.objects.get(action="override").address == "10.0.0.4"


def test_logins_and_failed_logins_on_the_login_page_and_the_token_endpoint_are_recorded(client, api_client):
    user = reviewer(username="reader-9")
    password = "pass-word-123"  # the factories' password

    client.post(reverse("login"), {"username": "reader-9", "password": "wrong"})
    client.post(reverse("login"), {"username": "reader-9", "password": password})
    assert api_client.post("/api/auth/token/", {"username": "nobody", "password": "x"}).status_code == 400
    assert api_client.post("/api/auth/token/", {"username": "reader-9", "password": password}).status_code == 200

    assert _trail() == [
        ("reader-9", "login_failed", None, None, "/accounts/login/"),
        ("reader-9", "login", None, None, "/accounts/login/"),
        ("nobody", "login_failed", None, None, "/api/auth/token/"),
        ("reader-9", "login", None, None, "/api/auth/token/"),
    ]
    events = AccessEvent.objects.order_by("id")
    assert [event.user_id for event in events] == [None, user.pk, None, user.pk]
    assert all(event.address == "127.0.0.1" for event in events)
    assert not any(password in str(value) for row in events.values() for value in row.values())


def _trail_of_two_sites() -> dict[str, int]:
    """Events at site A and site B, and a login (no site), as the services and the login signal write them."""
    a, b = PredictionFactory(study__source="site-a").study, PredictionFactory(study__source="site-b").study
    review_submit(study=a, reviewer=reviewer(username="reader-a", site_name="site-a"), label="normal")
    study_reject(study=b, reviewer=reviewer(username="reader-b", site_name="site-b"), reason="unreadable")
    Client().force_login(UserFactory(username="someone"))
    return {"a": a.pk, "b": b.pk}


def test_a_site_lead_reads_the_trail_of_the_sites_they_lead_and_a_superuser_all_of_it(api_client):
    ids = _trail_of_two_sites()
    api_client.force_authenticate(site_lead(site_name="site-a"))
    lead_sees = api_client.get("/api/audit-events/").json()
    api_client.force_authenticate(UserFactory(is_superuser=True))
    superuser_sees = api_client.get("/api/audit-events/").json()

    assert [(e["username"], e["action"], e["study"], e["site"]) for e in lead_sees["results"]] == [
        ("reader-a", "review", ids["a"], "site-a")
    ]
    assert [(e["username"], e["action"], e["site"]) for e in superuser_sees["results"]] == [
        ("someone", "login", None),
        ("reader-b", "reject", "site-b"),
        ("reader-a", "review", "site-a"),
    ]


def test_the_trail_filters_by_action_study_and_days(api_client):
    ids = _trail_of_two_sites()
    AccessEvent.objects.filter(action="login").update(at=timezone.now() - timedelta(days=3))
    api_client.force_authenticate(UserFactory(is_superuser=True))
    today = timezone.localdate()

    def actions(**query) -> list[str]:
        return [event["action"] for event in api_client.get("/api/audit-events/", query).json()["results"]]

    assert actions(action="reject") == ["reject"]
    assert actions(study=ids["a"]) == ["review"]
    assert actions(date_from=today.isoformat()) == ["reject", "review"]
    assert actions(date_to=(today - timedelta(days=1)).isoformat()) == ["login"]
    response = api_client.get("/api/audit-events/", {"action": "coffee"})
    assert response.status_code == 400 and "action" in response.json()


def test_the_trail_exports_as_csv_with_the_same_filters_and_formulas_defused(api_client):
    ids = _trail_of_two_sites()
    api_client.post("/api/auth/token/", {"username": "=HYPERLINK(1)", "password": "x"})
    api_client.force_authenticate(UserFactory(is_superuser=True))

    response = api_client.get("/api/audit-events/export/")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    only_a = api_client.get("/api/audit-events/export/", {"study": ids["a"]})

    assert response.status_code == 200 and response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="audit-trail.csv"'
    assert rows[0] == ["at", "username", "action", "study", "site", "detail", "address"]
    assert [row[1:6] for row in rows[1:]] == [
        ["'=HYPERLINK(1)", "login_failed", "", "", "/api/auth/token/"],
        ["someone", "login", "", "", ""],
        ["reader-b", "reject", str(ids["b"]), "site-b", "unreadable"],
        ["reader-a", "review", str(ids["a"]), "site-a", "normal, round 1"],
    ]
    assert len(list(csv.reader(io.StringIO(b"".join(only_a.streaming_content).decode())))) == 2


def test_the_audit_page_shows_a_lead_their_sites_events_and_links_the_csv(client):
    _trail_of_two_sites()
    client.force_login(site_lead(site_name="site-a"))

    html = client.get(reverse("studies:audit"), {"action": "review"}).content.decode()

    assert "reader-a" in html and "reader-b" not in html
    assert 'href="/api/audit-events/export/?action=review"' in html
