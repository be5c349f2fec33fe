"""The server-rendered study pages: who sees them, what they show, what their forms write."""

import io

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from PIL import Image

from studies.models import Label, Patient, Prediction, Review, SiteMembership, Study
from tests.factories import ReviewFactory, site_named
from training.models import ModelVersion

pytestmark = pytest.mark.django_db


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (96, 96), color=128).save(buffer, format="PNG")
    return buffer.getvalue()


def _user(django_user_model, username: str, role: str | None):
    user = django_user_model.objects.create_user(username=username, password="pw-for-tests")
    if role:
        SiteMembership.objects.create(user=user, site=site_named(), role=role)
    return user


def _study(uploaded_by=None, **fields) -> Study:
    site = site_named()
    study = Study(
        site=site,
        source=site.slug,
        patient=Patient.objects.create(site=site, ref=f"p-{Patient.objects.count()}"),
        sha256=f"{Study.objects.count():064d}",
        width=96,
        height=96,
        uploaded_by=uploaded_by,
        **fields,
    )
    study.image.save("upload.png", ContentFile(_png()), save=False)
    study.save()
    return study


def _predicted_study(uploaded_by=None) -> tuple[Study, Prediction]:
    study = _study(uploaded_by=uploaded_by, status=Study.Status.PREDICTED)
    version, _ = ModelVersion.objects.get_or_create(
        name="cnn-v1",
        defaults={
            "artifact": "models/cnn-v1.keras",
            "architecture": "small_cnn",
            "class_names": Label.values,
            "input_size": 32,
        },
    )
    prediction = Prediction.objects.create(
        study=study,
        model_version=version,
        probabilities={"covid": 0.72, "normal": 0.18, "pneumonia": 0.10},
        label=Label.COVID,
        confidence=0.72,
        inference_ms=12.0,
    )
    return study, prediction


def test_study_list_redirects_anonymous_users_to_login(client):
    response = client.get(reverse("studies:list"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_study_list_shows_only_studies_matching_the_reviewed_filter(client, django_user_model):
    reviewer = _user(django_user_model, "rita", "reviewer")
    reviewed, _ = _predicted_study()
    ReviewFactory(study=reviewed, reviewer=reviewer, label=Label.COVID)
    unreviewed, _ = _predicted_study()
    client.force_login(reviewer)

    response = client.get(reverse("studies:list"), {"reviewed": "false"})

    assert response.status_code == 200
    assert [study.pk for study in response.context["page"].object_list] == [unreviewed.pk]


def test_study_detail_of_a_predicted_study_shows_label_and_probabilities(client, django_user_model):
    reviewer = _user(django_user_model, "rita", "reviewer")
    study, _ = _predicted_study()
    client.force_login(reviewer)

    response = client.get(reverse("studies:detail", args=[study.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Research use only — not a diagnostic device" in html
    assert "Confirm COVID-19" in html
    assert "72.0%" in html and "18.0%" in html and "10.0%" in html
    assert "cnn-v1" in html


def test_reviewer_confirm_post_creates_a_review_with_the_predicted_label(client, django_user_model):
    reviewer = _user(django_user_model, "rita", "reviewer")
    study, prediction = _predicted_study()
    client.force_login(reviewer)

    response = client.post(
        reverse("studies:review", args=[study.pk]), {"label": prediction.label, "comment": "clear case"}
    )

    assert response.status_code == 302
    review = Review.objects.get(study=study)
    assert (review.label, review.reviewer, review.comment) == (Label.COVID, reviewer, "clear case")


def test_review_of_a_study_without_prediction_shows_the_service_message_and_creates_nothing(client, django_user_model):
    reviewer = _user(django_user_model, "rita", "reviewer")
    study = _study(status=Study.Status.QUEUED)
    client.force_login(reviewer)

    response = client.post(reverse("studies:review", args=[study.pk]), {"label": Label.NORMAL}, follow=True)

    assert response.status_code == 200
    assert "This study has no prediction yet" in response.content.decode()
    assert not Review.objects.exists()


def test_non_reviewer_review_post_is_refused_and_creates_nothing(client, django_user_model):
    uploader = _user(django_user_model, "ulla", "uploader")
    study, _ = _predicted_study(uploaded_by=uploader)
    client.force_login(uploader)

    response = client.post(reverse("studies:review", args=[study.pk]), {"label": Label.NORMAL})

    assert response.status_code == 403
    assert not Review.objects.exists()


def test_upload_page_is_refused_to_users_who_cannot_upload(client, django_user_model):
    client.force_login(_user(django_user_model, "nobody", None))

    response = client.get(reverse("studies:upload"))

    assert response.status_code == 403


def test_review_queue_lists_unreviewed_predictions_least_confident_first(client, django_user_model):
    reviewer = _user(django_user_model, "rita", "reviewer")
    confident, _ = _predicted_study()
    unsure, prediction = _predicted_study()
    Prediction.objects.filter(pk=prediction.pk).update(confidence=0.4)
    client.force_login(reviewer)

    response = client.get(reverse("studies:queue"))

    assert response.status_code == 200
    assert [study.pk for study in response.context["page"].object_list] == [unsure.pk, confident.pk]


def test_the_study_pages_requeue_takes_only_a_failed_or_lost_study_of_the_readers_own_site(client):
    from tests.factories import PredictionFactory, StudyFactory, reviewer

    reader = reviewer()
    predicted = PredictionFactory().study
    failed = StudyFactory(status=Study.Status.FAILED, error="worker died")
    elsewhere = StudyFactory(status=Study.Status.FAILED, site=site_named("elsewhere"), uploaded_by=reader)
    client.force_login(reader)

    response = client.post(reverse("studies:requeue", args=[predicted.pk]), follow=True)
    assert "predicted already" in response.content.decode()
    assert client.post(reverse("studies:requeue", args=[failed.pk])).status_code == 302
    predicted.refresh_from_db()
    failed.refresh_from_db()
    assert (predicted.status, failed.status) == (Study.Status.PREDICTED, Study.Status.QUEUED)

    # An uploader there: sees their own upload, does not review that site.
    SiteMembership.objects.create(user=reader, site=elsewhere.site, role=SiteMembership.Role.UPLOADER)
    response = client.post(reverse("studies:requeue", args=[elsewhere.pk]), follow=True)
    assert "Only reviewers or site leads" in response.content.decode()
    elsewhere.refresh_from_db()
    assert elsewhere.status == Study.Status.FAILED
