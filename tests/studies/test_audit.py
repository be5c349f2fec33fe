"""The access audit trail: image and heatmap views, dataset exports and deletions leave a row;
refused requests leave none; reviews and audit rows cannot be deleted in the admin."""

import pytest
from django.contrib.admin.sites import site as admin_site
from django.core.files.base import ContentFile
from django.test import RequestFactory

from studies.models import AccessEvent, Review
from studies.services import study_delete
from tests.factories import PredictionFactory, ReviewFactory, StudyFactory, UserFactory, ml_lead, reviewer
from training.services import snapshot_create

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
    study_delete(study=other, user=UserFactory(username="admin-1"))

    assert _events() == [("lead-1", "export", None), ("admin-1", "delete", other_id)]
    assert f"snapshot {snapshot.pk}" in AccessEvent.objects.get(action="export").detail


def test_reviews_and_audit_rows_cannot_be_deleted_in_the_admin():
    request = RequestFactory().get("/admin/")
    request.user = UserFactory(is_staff=True, is_superuser=True)
    assert not admin_site._registry[Review].has_delete_permission(request)
    assert not admin_site._registry[AccessEvent].has_delete_permission(request)
    assert not admin_site._registry[AccessEvent].has_change_permission(request)
