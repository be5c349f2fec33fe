"""The reading pages and the study page's reading forms."""

import pytest
from django.urls import reverse

from studies.models import Review, Study
from studies.services import review_submit
from tests.factories import PredictionFactory, UserFactory, reviewer, site_lead, uploader

pytestmark = pytest.mark.django_db


def test_queue_page_filters_by_source_and_rejects_a_bad_filter_with_a_message(client):
    kept = PredictionFactory(study__source="site-a").study
    PredictionFactory(study__source="site-b")
    reviewer(username="reader", site_name="site-a")
    client.force_login(reviewer(username="reader", site_name="site-b"))  # reads at both sites

    response = client.get(reverse("studies:queue"), {"source": "site-a", "order": "age"})
    bad = client.get(reverse("studies:queue"), {"order": "random"})

    assert [s.pk for s in response.context["page"].object_list] == [kept.pk]
    assert "order:" in bad.content.decode()


def test_queue_page_offers_only_the_sources_the_reader_reviews(client):
    PredictionFactory(study__source="site-c")  # another hospital's study: its name is not for this reader
    reviewer(username="reader", site_name="site-a")
    client.force_login(reviewer(username="reader", site_name="site-b"))

    response = client.get(reverse("studies:queue"))

    assert list(response.context["sources"]) == ["site-a", "site-b"]
    assert "site-c" not in response.content.decode()


def test_reading_and_adjudication_pages_need_their_roles(client):
    client.force_login(uploader())
    assert client.get(reverse("studies:read")).status_code == 403
    client.force_login(reviewer())
    assert client.get(reverse("studies:read")).status_code == 200
    assert client.get(reverse("studies:adjudication")).status_code == 403


def test_reject_form_takes_the_study_out_of_reading(client):
    study = PredictionFactory().study
    client.force_login(reviewer())

    response = client.post(reverse("studies:reject", args=[study.pk]), {"reason": "wrong_view"}, follow=True)

    assert "rejected: it will not enter any dataset" in response.content.decode()
    assert Study.objects.get(pk=study.pk).reading_state == "rejected"


def test_adjudication_form_without_a_reason_shows_the_error_and_changes_nothing(client, settings):
    settings.REVIEW_READS_REQUIRED = 2
    study = PredictionFactory().study
    review_submit(study=study, reviewer=reviewer(), label="covid")
    review_submit(study=study, reviewer=reviewer(), label="normal")
    client.force_login(site_lead())

    response = client.post(reverse("studies:adjudicate", args=[study.pk]), {"label": "covid"}, follow=True)

    assert "Say why this label" in response.content.decode()
    assert Study.objects.get(pk=study.pk).reading_state == "disagreement"


def test_a_reader_does_not_see_earlier_reads_on_the_study_page_until_they_read(client, settings):
    settings.REVIEW_READS_REQUIRED = 2
    study = PredictionFactory().study
    review_submit(study=study, reviewer=reviewer(username="ann"), label="pneumonia")
    client.force_login(reviewer())

    html = client.get(reverse("studies:detail", args=[study.pk])).content.decode()

    assert "Other readers' labels are hidden" in html
    assert "read by ann" not in html


def test_dashboard_page_renders_for_any_role_and_refuses_a_bare_login(client):
    client.force_login(uploader())
    assert client.get(reverse("studies:dashboard")).status_code == 200
    client.force_login(UserFactory())
    assert client.get(reverse("studies:dashboard")).status_code == 403


def test_a_blinded_reader_reads_from_the_study_page_without_seeing_the_model(client, settings):
    settings.REVIEW_BLIND_TO_MODEL_SOURCES = ["blind"]
    study = PredictionFactory(study__source="blind", label="covid").study
    reader = reviewer(site_name="blind")
    client.force_login(reader)

    html = client.get(reverse("studies:detail", args=[study.pk])).content.decode()
    client.post(reverse("studies:review", args=[study.pk]), {"label": "normal"})

    assert "Hidden: blinded reading" in html and "Confirm COVID-19" not in html and "70.0%" not in html
    assert Study.objects.get(pk=study.pk).label_final == "normal"


def test_queue_page_hides_the_model_on_blinded_sources(client, settings):
    settings.REVIEW_BLIND_TO_MODEL_SOURCES = ["blind"]
    study = PredictionFactory(study__source="blind", label="pneumonia").study
    client.force_login(reviewer(site_name="blind"))

    html = client.get(reverse("studies:queue")).content.decode()

    assert f"#{study.pk}</a>" in html
    assert '<td class="muted">blinded</td>' in html and "Other pneumonia</span>" not in html


def test_study_list_page_hides_the_model_on_blinded_sources_until_read(client, settings):
    settings.REVIEW_BLIND_TO_MODEL_SOURCES = ["blind"]
    blinded = PredictionFactory(study__source="blind", label="pneumonia").study
    PredictionFactory(study__source="open", label="covid")
    reviewer(username="reader", site_name="open")
    client.force_login(reviewer(username="reader", site_name="blind"))  # reads at both sites

    html = client.get(reverse("studies:list")).content.decode()

    assert f"#{blinded.pk}</a>" in html
    assert '<span class="muted">blinded</span>' in html and "Other pneumonia</span>" not in html
    assert "COVID-19</span>" in html  # an unblinded source still shows the model's answer


def test_review_form_keeps_the_reading_time_the_page_measured(client):
    timed, untimed = PredictionFactory().study, PredictionFactory().study
    client.force_login(reviewer())

    client.post(reverse("studies:review", args=[timed.pk]), {"label": "covid", "reading_ms": "2500"})
    client.post(reverse("studies:review", args=[untimed.pk]), {"label": "covid", "reading_ms": "-3"})

    assert Review.objects.get(study=timed).reading_ms == 2500
    assert Review.objects.get(study=untimed).reading_ms is None
