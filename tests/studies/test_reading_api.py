"""The reading endpoints: queue, reject, send back, assign, adjudicate, and blinding in the study JSON."""

import pytest

from studies.models import Review, Study
from studies.services import review_submit
from studies.sites import membership_set
from tests.factories import PredictionFactory, reviewer, site_lead, site_named, uploader

pytestmark = pytest.mark.django_db


def test_review_endpoint_keeps_its_contract_and_records_reading_time(api_client):
    study = PredictionFactory().study
    api_client.force_authenticate(reviewer())

    response = api_client.post(f"/api/studies/{study.pk}/reviews/", {"label": "normal", "reading_ms": 3100})

    assert response.status_code == 201
    assert {"id", "reviewer", "label", "comment", "created_at"} <= set(response.json())
    assert response.json()["reading_ms"] == 3100
    detail = api_client.get(f"/api/studies/{study.pk}/").json()
    assert (detail["final_label"], detail["label_rule"], detail["reading_state"]) == ("normal", "single_read", "final")


def test_review_queue_returns_the_next_studies_without_the_excluded_ones(api_client):
    first, second, _third = (PredictionFactory().study for _ in range(3))
    api_client.force_authenticate(reviewer())

    response = api_client.get("/api/review-queue/", {"order": "age", "exclude": f"{first.pk}", "limit": 1})

    assert response.status_code == 200
    assert response.json()["count"] == 2
    assert [s["id"] for s in response.json()["results"]] == [second.pk]


def test_review_queue_rejects_a_bad_filter_with_a_400(api_client):
    api_client.force_authenticate(reviewer())
    response = api_client.get("/api/review-queue/", {"order": "random", "exclude": "1,x"})
    assert response.status_code == 400
    assert set(response.json()) == {"order", "exclude"}


def test_reject_needs_a_known_reason_and_changes_nothing_otherwise(api_client):
    study = PredictionFactory().study
    api_client.force_authenticate(reviewer())

    bad = api_client.post(f"/api/studies/{study.pk}/reject/", {"reason": "ugly"})
    good = api_client.post(f"/api/studies/{study.pk}/reject/", {"reason": "wrong_view", "comment": "lateral"})

    assert bad.status_code == 400 and "reason" in bad.json()
    assert good.status_code == 200 and good.json()["reading_state"] == "rejected"
    assert good.json()["rejection_reason"] == "wrong_view"


def test_uploaders_cannot_reject_and_reviewers_cannot_adjudicate_or_assign(api_client):
    study = PredictionFactory().study
    api_client.force_authenticate(uploader())
    assert api_client.post(f"/api/studies/{study.pk}/reject/", {"reason": "unreadable"}).status_code == 403
    api_client.force_authenticate(reviewer())
    assert api_client.post(f"/api/studies/{study.pk}/adjudicate/", {"label": "covid", "reason": "x"}).status_code == 403
    assert api_client.post(f"/api/studies/{study.pk}/assign/", {"reviewer": None}, format="json").status_code == 403
    assert Study.objects.get(pk=study.pk).reading_state == "unread"


def test_send_back_reopens_a_final_study(api_client):
    study = PredictionFactory().study
    review_submit(study=study, reviewer=reviewer(), label="covid")
    api_client.force_authenticate(reviewer())

    response = api_client.post(f"/api/studies/{study.pk}/send-back/")

    assert response.status_code == 200
    assert (response.json()["reading_state"], response.json()["final_label"]) == ("unread", None)


def test_send_back_and_assign_need_a_review_role_at_the_studys_own_site(api_client):
    """A reviewer and adjudicator at site A who only uploads at site B sees their own upload there, and may
    neither send it back nor assign it (reading and assigning B's studies is for B's reviewers)."""
    elsewhere = site_lead(username="lead-a", site_name="site-a")
    membership_set(user=elsewhere, site=site_named("site-b"), role="uploader")
    study = PredictionFactory(study__source="site-b", study__uploaded_by=elsewhere).study
    review_submit(study=study, reviewer=reviewer(site_name="site-b"), label="covid")
    reviewer(username="bea", site_name="site-b")
    api_client.force_authenticate(elsewhere)

    sent_back = api_client.post(f"/api/studies/{study.pk}/send-back/")
    assigned = api_client.post(f"/api/studies/{study.pk}/assign/", {"reviewer": "bea"}, format="json")

    assert sent_back.status_code == 403 and "site-b" in sent_back.json()["detail"]
    assert assigned.status_code == 403 and "site-b" in assigned.json()["detail"]
    study.refresh_from_db()
    assert (study.reading_round, study.reading_state, study.assigned_to) == (1, "final", None)


def test_adjudication_endpoint_sets_the_final_label_of_a_disagreement(api_client, settings):
    settings.REVIEW_READS_REQUIRED = 2
    study = PredictionFactory().study
    review_submit(study=study, reviewer=reviewer(), label="covid")
    review_submit(study=study, reviewer=reviewer(), label="normal")
    api_client.force_authenticate(reviewer(groups=["adjudicator"]))  # a reviewer of the site, adjudicator group

    queue = api_client.get("/api/adjudication-queue/").json()
    response = api_client.post(f"/api/studies/{study.pk}/adjudicate/", {"label": "normal", "reason": "Clear lungs."})

    assert [s["id"] for s in queue["results"]] == [study.pk]
    assert response.status_code == 201 and response.json()["kind"] == "adjudication"
    assert api_client.get(f"/api/studies/{study.pk}/").json()["label_rule"] == "adjudicated"


def test_assign_puts_a_study_in_one_reviewers_queue(api_client):
    study = PredictionFactory().study
    ann = reviewer(username="ann")
    api_client.force_authenticate(site_lead())

    response = api_client.post(f"/api/studies/{study.pk}/assign/", {"reviewer": "ann"}, format="json")
    unknown = api_client.post(f"/api/studies/{study.pk}/assign/", {"reviewer": "zed"}, format="json")

    assert response.status_code == 200 and response.json()["assigned_to"] == "ann"
    assert unknown.status_code == 400 and "reviewer" in unknown.json()
    api_client.force_authenticate(ann)
    assert [s["id"] for s in api_client.get("/api/review-queue/", {"mine": "true"}).json()["results"]] == [study.pk]


def test_a_reader_sees_neither_other_reads_nor_on_a_blinded_source_the_model(api_client, settings):
    settings.REVIEW_READS_REQUIRED = 2
    settings.REVIEW_BLIND_TO_MODEL_SOURCES = ["blind"]
    study = PredictionFactory(study__source="blind").study
    review_submit(study=study, reviewer=reviewer(site_name="blind"), label="covid")
    second = reviewer(site_name="blind")
    api_client.force_authenticate(second)

    before = api_client.get(f"/api/studies/{study.pk}/").json()
    api_client.post(f"/api/studies/{study.pk}/reviews/", {"label": "covid"})
    after = api_client.get(f"/api/studies/{study.pk}/").json()

    assert (before["reviews"], before["prediction"], before["blinded"]) == ([], None, {"reads": True, "model": True})
    assert len(after["reviews"]) == 2 and after["prediction"]["label"] == "covid"
    assert after["final_label"] == "covid" and after["label_rule"] == "unanimous"
    assert Review.objects.filter(study=study).count() == 2


def test_a_predicted_label_filter_does_not_reveal_the_model_to_a_blinded_reader(api_client, settings):
    settings.REVIEW_BLIND_TO_MODEL_SOURCES = ["blind"]
    settings.REVIEW_READS_REQUIRED = 2
    study = PredictionFactory(study__source="blind", label="covid").study
    api_client.force_authenticate(reviewer(site_name="blind"))
    found = {
        path: [s["id"] for s in api_client.get(path, {"predicted_label": "covid"}).json()["results"]]
        for path in ("/api/studies/", "/api/review-queue/")
    }
    assert found == {"/api/studies/": [], "/api/review-queue/": []}

    api_client.post(f"/api/studies/{study.pk}/reviews/", {"label": "normal"})  # read: the answer may show now
    listed = api_client.get("/api/studies/", {"predicted_label": "covid"}).json()["results"]
    assert [s["id"] for s in listed] == [study.pk]
    api_client.force_authenticate(site_lead(site_name="blind"))  # leads adjudicate: never blinded
    assert [s["id"] for s in api_client.get("/api/review-queue/", {"predicted_label": "covid"}).json()["results"]] == [
        study.pk
    ]


def test_a_readers_comment_that_carries_an_identifier_is_refused_and_nothing_is_recorded(api_client):
    study = PredictionFactory().study
    api_client.force_authenticate(reviewer())

    review = api_client.post(
        f"/api/studies/{study.pk}/reviews/", {"label": "normal", "comment": "Patient DOE^JOHN 1970-01-01"}
    )
    reject = api_client.post(f"/api/studies/{study.pk}/reject/", {"reason": "wrong_view", "comment": "DOE^JOHN"})

    assert review.status_code == 400 and "patient identifier" in review.json()["comment"][0]
    assert reject.status_code == 400 and "patient identifier" in reject.json()["comment"][0]
    assert not Review.objects.exists()
    study.refresh_from_db()
    assert study.reading_state != "rejected"


def test_a_readers_comment_from_the_page_is_bounded_like_the_apis(client):
    study = PredictionFactory().study
    client.force_login(reviewer())
    response = client.post(f"/studies/{study.pk}/review/", {"label": "normal", "comment": "x" * 100_000}, follow=True)
    assert "At most 5,000 characters" in response.content.decode()
    assert not Review.objects.exists()
