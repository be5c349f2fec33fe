"""Sites and roles: a study belongs to its uploader's site, patients are per site, reviewers see and
review their own sites' studies, never their own uploads."""

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from studies.models import Patient, Review, Study
from tests.factories import PredictionFactory, StudyFactory, member, reviewer, site_named, uploader
from tests.images import png_bytes

pytestmark = pytest.mark.django_db
URL = "/api/studies/"


def _upload(client, **fields):
    return client.post(URL, {"image": SimpleUploadedFile("cxr.png", png_bytes()), **fields}, format="multipart")


def test_an_upload_without_source_belongs_to_the_uploaders_only_site(api_client):
    api_client.force_authenticate(uploader(site_name="Hospital B"))

    response = _upload(api_client, patient_ref="P-1")

    assert response.status_code == 201, response.content
    study = Study.objects.get()
    assert study.site == site_named("Hospital B") and study.source == "hospital-b" == response.json()["source"]
    assert study.patient.site == study.site


def test_an_upload_to_a_site_the_user_does_not_belong_to_returns_400_and_stores_nothing(api_client, media_root: Path):
    site_named("other-hospital")
    api_client.force_authenticate(uploader())

    response = _upload(api_client, source="other-hospital")

    assert response.status_code == 400
    assert response.json() == {"source": ["You cannot upload to site 'other-hospital'; your sites: test-site."]}
    assert not Study.objects.exists() and not Patient.objects.exists()
    assert not media_root.exists() or not any(p.is_file() for p in media_root.rglob("*"))


def test_a_user_of_two_sites_must_name_the_site(api_client):
    user = uploader()
    member("uploader", site_name="second", username=user.username)
    api_client.force_authenticate(user)

    assert _upload(api_client).json() == {"source": ["Name the site: one of second, test-site."]}
    assert _upload(api_client, source="second").status_code == 201


def test_the_same_patient_ref_at_two_sites_is_two_patients(api_client):
    for site_name in ("site-a", "site-b"):
        api_client.force_authenticate(uploader(site_name=site_name))
        assert _upload(api_client, patient_ref="P-0042").status_code == 201

    assert Patient.objects.filter(ref="P-0042").count() == 2
    assert set(Study.objects.values_list("patient__site__slug", flat=True)) == {"site-a", "site-b"}


def test_a_reviewer_sees_only_the_studies_of_their_sites(api_client):
    mine = StudyFactory(source="site-a")
    theirs = StudyFactory(source="site-b")
    api_client.force_authenticate(reviewer(site_name="site-a"))

    assert [s["id"] for s in api_client.get(URL).json()["results"]] == [mine.pk]
    assert api_client.get(f"{URL}{theirs.pk}/").status_code == 404
    assert api_client.get(f"{URL}{theirs.pk}/image/").status_code == 404


def test_a_reviewer_cannot_review_their_own_upload_unless_the_setting_allows_it(api_client, settings):
    user = reviewer()
    study = PredictionFactory(study__uploaded_by=user).study
    api_client.force_authenticate(user)

    response = api_client.post(f"{URL}{study.pk}/reviews/", {"label": "normal"})

    assert response.status_code == 403
    assert response.json() == {"detail": "You uploaded this study; another reviewer must review it."}
    assert not Review.objects.exists()
    settings.ALLOW_SELF_REVIEW = True
    assert api_client.post(f"{URL}{study.pk}/reviews/", {"label": "normal"}).status_code == 201


def test_an_uploader_at_one_site_and_reviewer_at_another_cannot_review_their_uploads_site(api_client, settings):
    settings.ALLOW_SELF_REVIEW = True
    user = uploader(site_name="site-a")
    member("reviewer", site_name="site-b", username=user.username)
    study = PredictionFactory(study__uploaded_by=user, study__source="site-a").study
    api_client.force_authenticate(user)

    response = api_client.post(f"{URL}{study.pk}/reviews/", {"label": "normal"})

    assert response.status_code == 403
    assert response.json() == {"detail": "Only reviewers or site leads of site-a may review this study."}


def test_the_review_queue_leaves_out_the_reviewers_own_uploads(client):
    user = reviewer()
    PredictionFactory(study__uploaded_by=user)
    other = PredictionFactory().study
    client.force_login(user)

    response = client.get("/review/")

    assert [s.pk for s in response.context["page"].object_list] == [other.pk]


def test_with_open_sites_an_upload_naming_a_new_source_opens_it_for_the_uploaders_team(api_client, settings):
    settings.OPEN_SITES = True
    user = uploader()
    colleague = reviewer()  # a reviewer at the uploader's site
    api_client.force_authenticate(user)

    response = _upload(api_client, source="Hospital X")

    assert response.status_code == 201, response.content
    study = Study.objects.get()
    assert study.source == "hospital-x"
    roles = dict(study.site.memberships.values_list("user__username", "role"))
    assert roles == {user.username: "uploader", colleague.username: "reviewer"}
    api_client.force_authenticate(colleague)
    assert api_client.get(f"/api/studies/{study.pk}/").status_code == 200


def test_without_open_sites_a_new_source_is_refused(api_client, settings):
    settings.OPEN_SITES = False
    api_client.force_authenticate(uploader())

    response = _upload(api_client, source="Hospital X")

    assert response.status_code == 400
    assert not Study.objects.exists()


def test_hospitals_named_without_latin_letters_each_open_their_own_site(api_client, settings):
    settings.OPEN_SITES = True
    api_client.force_authenticate(uploader())

    for name in ("北京医院", "東京病院", "北京医院"):
        assert _upload(api_client, source=name).status_code == 201

    by_site = {site.name: site.slug for site in (study.site for study in Study.objects.select_related("site"))}
    assert set(by_site) == {"北京医院", "東京病院"}
    assert len(set(by_site.values())) == 2 and all(slug.startswith("site-") for slug in by_site.values())
    assert Study.objects.filter(site__name="北京医院").count() == 2
