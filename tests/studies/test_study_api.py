"""Listing, filtering, reading and reviewing studies through the REST API."""

import pytest

from studies.models import Review, Study
from tests.factories import PredictionFactory, ReviewFactory, StudyFactory, UserFactory, reviewer, uploader


@pytest.mark.django_db
def test_uploaders_see_only_their_own_studies(api_client):
    alice, bob = uploader(), uploader()
    mine = StudyFactory(uploaded_by=alice)
    StudyFactory(uploaded_by=bob)
    api_client.force_authenticate(alice)
    ids = [s["id"] for s in api_client.get("/api/studies/").json()["results"]]
    assert ids == [mine.id]


@pytest.mark.django_db
def test_an_uploader_gets_404_for_someone_elses_study(api_client):
    other = StudyFactory(uploaded_by=uploader())
    api_client.force_authenticate(uploader())
    assert api_client.get(f"/api/studies/{other.id}/").status_code == 404
    assert api_client.get(f"/api/studies/{other.id}/image/").status_code == 404


@pytest.mark.django_db
def test_list_filters_by_status_reviewed_and_final_label(api_client, reviewer_user):
    unreviewed = PredictionFactory().study
    reviewed = ReviewFactory(study=PredictionFactory().study, label="pneumonia").study
    queued = StudyFactory()
    api_client.force_authenticate(reviewer_user)

    def ids(query: str) -> set[int]:
        response = api_client.get(f"/api/studies/?{query}")
        assert response.status_code == 200
        return {s["id"] for s in response.json()["results"]}

    assert ids("reviewed=false") == {unreviewed.id, queued.id}
    assert ids("reviewed=true") == {reviewed.id}
    assert ids("label=pneumonia") == {reviewed.id}
    assert ids("status=queued") == {queued.id}
    assert ids("predicted_label=covid") == {unreviewed.id, reviewed.id}


@pytest.mark.django_db
def test_an_unknown_filter_value_returns_400(api_client, reviewer_user):
    api_client.force_authenticate(reviewer_user)
    response = api_client.get("/api/studies/?status=bogus")
    assert response.status_code == 400
    assert "status" in response.json()


@pytest.mark.django_db
def test_list_is_paginated(api_client, reviewer_user):
    StudyFactory.create_batch(3)
    api_client.force_authenticate(reviewer_user)
    body = api_client.get("/api/studies/").json()
    assert body["count"] == 3 and len(body["results"]) == 3 and "next" in body


@pytest.mark.django_db
def test_reviewer_confirms_a_prediction_and_it_becomes_the_final_label(api_client, reviewer_user):
    study = PredictionFactory().study
    api_client.force_authenticate(reviewer_user)
    response = api_client.post(f"/api/studies/{study.id}/reviews/", {"label": "covid", "comment": "agree"})
    assert response.status_code == 201
    assert response.json()["reviewer"] == reviewer_user.username
    assert api_client.get(f"/api/studies/{study.id}/").json()["final_label"] == "covid"


@pytest.mark.django_db
def test_the_latest_review_is_the_final_label(api_client, reviewer_user):
    study = PredictionFactory().study
    api_client.force_authenticate(reviewer_user)
    api_client.post(f"/api/studies/{study.id}/reviews/", {"label": "covid"})
    api_client.post(f"/api/studies/{study.id}/reviews/", {"label": "normal", "comment": "on second look"})
    body = api_client.get(f"/api/studies/{study.id}/").json()
    assert body["final_label"] == "normal"
    assert [r["label"] for r in body["reviews"]] == ["normal", "covid"]


@pytest.mark.django_db
def test_a_non_reviewer_cannot_review(api_client):
    owner = uploader()
    study = PredictionFactory(study__uploaded_by=owner).study
    api_client.force_authenticate(owner)
    response = api_client.post(f"/api/studies/{study.id}/reviews/", {"label": "covid"})
    assert response.status_code == 403
    assert Review.objects.count() == 0


@pytest.mark.django_db
def test_staff_alone_may_not_review_but_a_superuser_may(api_client):
    study = PredictionFactory().study
    api_client.force_authenticate(UserFactory(is_staff=True))
    assert api_client.post(f"/api/studies/{study.id}/reviews/", {"label": "normal"}).status_code == 403
    api_client.force_authenticate(UserFactory(is_staff=True, is_superuser=True))
    assert api_client.post(f"/api/studies/{study.id}/reviews/", {"label": "normal"}).status_code == 201


@pytest.mark.django_db
def test_an_unknown_label_returns_400_and_creates_nothing(api_client, reviewer_user):
    study = PredictionFactory().study
    api_client.force_authenticate(reviewer_user)
    response = api_client.post(f"/api/studies/{study.id}/reviews/", {"label": "tuberculosis"})
    assert response.status_code == 400
    assert response.json() == {"label": ['"tuberculosis" is not a valid choice.']}
    assert Review.objects.count() == 0


@pytest.mark.django_db
def test_reviewing_a_study_without_prediction_returns_400(api_client, reviewer_user):
    study = StudyFactory()
    api_client.force_authenticate(reviewer_user)
    response = api_client.post(f"/api/studies/{study.id}/reviews/", {"label": "normal"})
    assert response.status_code == 400
    assert "no prediction yet" in response.json()["study"][0]
    assert Review.objects.count() == 0


@pytest.mark.django_db
def test_openapi_schema_and_docs_are_served_without_login(api_client):
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in ("/api/studies/", "/api/studies/{id}/reviews/", "/api/models/active/", "/api/training-runs/"):
        assert path in paths
    assert api_client.get("/api/docs/").status_code == 200


@pytest.mark.django_db
def test_the_openapi_schema_validates_without_warnings(tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert "/api/studies/{id}/reviews/" in (tmp_path / "schema.yaml").read_text()


@pytest.mark.django_db
def test_a_study_whose_files_are_gone_from_storage_answers_404_not_500(api_client, media_root):
    prediction = PredictionFactory()
    study = prediction.study
    api_client.force_authenticate(reviewer())
    (media_root / study.image.name).unlink()  # a lost volume, a partial restore
    for path in ("image/", "image/?size=128"):
        assert api_client.get(f"/api/studies/{study.pk}/{path}").status_code == 404, path

    study.rendition.name = "renditions/gone.jpg"
    study.save(update_fields=["rendition"])
    prediction.heatmap.name = "heatmaps/gone.jpg"
    prediction.save(update_fields=["heatmap"])
    for path in ("image/?size=128", "heatmap/"):
        assert api_client.get(f"/api/studies/{study.pk}/{path}").status_code == 404, path


@pytest.mark.django_db
def test_a_study_whose_stored_image_no_longer_decodes_answers_404_with_why(api_client, media_root):
    study = StudyFactory(status=Study.Status.FAILED, error="Cannot read the stored image")
    (media_root / study.image.name).write_bytes(b"not an image any more")  # no rendition: cut from the original
    api_client.force_authenticate(reviewer())
    response = api_client.get(f"/api/studies/{study.pk}/image/?size=128")
    assert response.status_code == 404
    assert "cannot be shown" in response.json()["detail"]
