"""Erasure: a site lead of the study's site (or a superuser) deletes a study, audited; its files go; in a frozen
snapshot it becomes a withdrawn case (a tombstone) that no export and no later snapshot holds."""

import csv
import io
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.urls import reverse

from studies.models import AccessEvent, Review, Study
from studies.services import study_delete
from tests.factories import PredictionFactory, ReviewFactory, StudyFactory, UserFactory, reviewer, site_lead
from training.models import SnapshotItem
from training.selectors import snapshot_items_current
from training.services import snapshot_create, snapshot_export_zip

pytestmark = pytest.mark.django_db


def _reviewed(count: int, source: str = "site-a") -> list[Study]:
    studies = [StudyFactory(source=source, seed=900 + i) for i in range(count)]
    for study in studies:
        ReviewFactory(study=study, label="normal")
    return studies


def _files(media_root: Path) -> set[str]:
    return {str(p.relative_to(media_root)) for p in media_root.rglob("*") if p.is_file()}


def test_erasing_a_study_of_a_frozen_snapshot_leaves_a_withdrawn_case_and_the_snapshot_as_frozen(
    media_root, django_capture_on_commit_callbacks
):
    erased, kept = _reviewed(2)
    snapshot = snapshot_create()
    frozen = (snapshot.content_hash, snapshot.counts)
    item = SnapshotItem.objects.get(snapshot=snapshot, study=erased)
    erased_id = erased.pk

    with django_capture_on_commit_callbacks(execute=True):
        study_delete(study=erased, user=site_lead(site_name="site-a"))

    item.refresh_from_db()
    assert (item.study_id, item.study_key, item.label, item.split) == (None, erased_id, "normal", item.split)
    assert item.withdrawn_at is not None
    assert SnapshotItem.objects.get(snapshot=snapshot, study_key=kept.pk).withdrawn_at is None
    snapshot.refresh_from_db()
    assert (snapshot.content_hash, snapshot.counts) == frozen
    assert not Study.objects.filter(pk=erased_id).exists() and not Review.objects.filter(study_id=erased_id).exists()
    assert erased.image.name not in _files(media_root)


def test_a_withdrawn_case_is_in_no_export_and_no_later_snapshot(api_client):
    erased, kept = _reviewed(2)
    first = snapshot_create()
    study_delete(study=erased, user=UserFactory(is_superuser=True))

    later = snapshot_create()
    with zipfile.ZipFile(snapshot_export_zip(snapshot=first)) as archive:
        names = archive.namelist()
        labels = list(csv.DictReader(io.StringIO(archive.read("labels.csv").decode())))
    api_client.force_authenticate(UserFactory(is_superuser=True))

    assert list(later.items.values_list("study_key", flat=True)) == [kept.pk]
    assert [row["path"] for row in labels] == [f"images/normal/study-{kept.pk}.png"]
    assert sorted(names) == [f"images/normal/study-{kept.pk}.png", "labels.csv"]
    assert api_client.get(f"/api/datasets/{first.pk}/").json()["withdrawn"] == 1
    assert api_client.get(f"/api/datasets/{later.pk}/").json()["withdrawn"] == 0


def test_a_site_lead_deletes_a_study_of_their_site_through_the_api_and_the_trail_keeps_it(api_client):
    study = PredictionFactory(study__source="site-a").study
    api_client.force_authenticate(site_lead(username="lead-a", site_name="site-a"))

    response = api_client.delete(f"/api/studies/{study.pk}/")

    assert response.status_code == 204 and not Study.objects.exists()
    event = AccessEvent.objects.get()
    assert (event.username, event.action, event.study_id_ref, event.site.slug) == (
        "lead-a",
        "delete",
        study.pk,
        "site-a",
    )


def test_a_reviewer_of_the_site_gets_403_and_a_lead_of_another_site_404_and_the_study_stays(api_client):
    study = StudyFactory(source="site-a")
    api_client.force_authenticate(reviewer(site_name="site-a"))
    refused = api_client.delete(f"/api/studies/{study.pk}/")
    api_client.force_authenticate(site_lead(site_name="site-b"))
    unseen = api_client.delete(f"/api/studies/{study.pk}/")

    assert refused.status_code == 403
    assert refused.json() == {"detail": "Only site leads of site-a (or a superuser) may delete this study."}
    assert unseen.status_code == 404
    assert Study.objects.filter(pk=study.pk).exists() and not AccessEvent.objects.exists()


def test_only_a_lead_of_the_study_s_site_or_a_superuser_may_delete_it():
    study = StudyFactory(source="site-a")
    with pytest.raises(PermissionDenied):
        study_delete(study=study, user=site_lead(site_name="site-b"))
    assert Study.objects.filter(pk=study.pk).exists() and not AccessEvent.objects.exists()


def test_a_reviewed_study_of_a_frozen_snapshot_is_deleted_in_the_admin_by_a_superuser(
    client, media_root, django_capture_on_commit_callbacks
):
    (study,) = _reviewed(1)
    study.rendition.save("rendition.png", ContentFile(b"png"), save=True)
    snapshot = snapshot_create()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:studies_study_changelist"),
            {"action": "delete_selected", "_selected_action": [study.pk], "post": "yes"},
        )

    assert response.status_code == 302 and not Study.objects.exists()
    assert snapshot.items.get().withdrawn_at is not None
    assert _files(media_root) == set()


def test_staff_who_lead_no_site_cannot_delete_studies_in_the_admin(client):
    study = StudyFactory(source="site-a")
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="studies", codename__in=["view_study", "delete_study"])
    )
    client.force_login(staff)

    changelist = client.get(reverse("admin:studies_study_changelist")).content.decode()
    response = client.post(reverse("admin:studies_study_delete", args=[study.pk]), {"post": "yes"})

    assert 'value="delete_selected"' not in changelist
    assert response.status_code == 403 and Study.objects.filter(pk=study.pk).exists()


def test_exports_and_runs_read_only_a_snapshot_s_current_cases_after_an_erasure():
    erased, kept = _reviewed(2)
    snapshot = snapshot_create()
    study_delete(study=erased, user=UserFactory(is_superuser=True))

    assert [item.study_key for item in snapshot_items_current(snapshot)] == [kept.pk]
    assert snapshot.items.count() == 2  # the tombstone stays


@pytest.mark.django_db
def test_a_study_erased_twice_at_once_is_erased_once(django_capture_on_commit_callbacks):
    study = StudyFactory()
    first, second = Study.objects.get(pk=study.pk), Study.objects.get(pk=study.pk)  # two requests' objects
    with django_capture_on_commit_callbacks(execute=True):
        study_delete(study=first)
        study_delete(study=second)  # the row is gone by then: nothing left to do, no error
    assert not Study.objects.filter(pk=study.pk).exists()
    assert AccessEvent.objects.filter(action=AccessEvent.Action.DELETE).count() == 1
