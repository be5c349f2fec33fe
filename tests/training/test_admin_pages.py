"""Admin pages and actions: they render with the annotated columns and write through the services."""

import io

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from PIL import Image

from studies.models import Label, Patient, Prediction, Review, Study
from tests.factories import ReviewFactory, reviewer, score_cases, site_named
from training.models import DatasetSnapshot, ModelActivation, ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db


def _model_version(name: str = "cnn-v1", **fields) -> ModelVersion:
    return ModelVersion.objects.create(
        name=name,
        artifact=f"models/{name}.keras",
        architecture="small_cnn",
        class_names=Label.values,
        input_size=32,
        **fields,
    )


def _predicted_study(version: ModelVersion, label: str = Label.PNEUMONIA) -> Study:
    buffer = io.BytesIO()
    Image.new("L", (96, 96), color=100).save(buffer, format="PNG")
    site = site_named()
    study = Study(
        site=site,
        patient=Patient.objects.create(site=site, ref=f"p-{Patient.objects.count()}"),
        sha256=f"{Study.objects.count():064d}",
        width=96,
        height=96,
        status=Study.Status.PREDICTED,
    )
    study.image.save("upload.png", ContentFile(buffer.getvalue()), save=False)
    study.save()
    probabilities = dict.fromkeys(Label.values, 0.1) | {label: 0.8}
    Prediction.objects.create(
        study=study,
        model_version=version,
        probabilities=probabilities,
        label=label,
        confidence=0.8,
        inference_ms=9.0,
    )
    return study


def test_admin_confirm_prediction_action_creates_reviews_for_the_acting_user(admin_client, admin_user):
    version = _model_version()
    studies = [_predicted_study(version, Label.PNEUMONIA), _predicted_study(version, Label.NORMAL)]

    response = admin_client.post(
        reverse("admin:studies_study_changelist"),
        {"action": "confirm_prediction", "_selected_action": [study.pk for study in studies]},
        follow=True,
    )

    assert response.status_code == 200
    assert "Prediction confirmed: 2 studies." in response.content.decode()
    reviews = {(review.study_id, review.label, review.reviewer) for review in Review.objects.all()}
    assert reviews == {(studies[0].pk, Label.PNEUMONIA, admin_user), (studies[1].pk, Label.NORMAL, admin_user)}


def test_admin_set_label_action_reports_a_study_without_prediction_and_labels_the_others(admin_client):
    labelled = _predicted_study(_model_version())
    unpredicted = Study.objects.create(
        site=site_named(),
        patient=Patient.objects.create(site=site_named(), ref="p-q"),
        sha256="f" * 64,
        width=1,
        height=1,
        image="studies/x.png",
    )

    response = admin_client.post(
        reverse("admin:studies_study_changelist"),
        {"action": "set_label_covid", "_selected_action": [labelled.pk, unpredicted.pk]},
        follow=True,
    )

    html = response.content.decode()
    assert f"Study {unpredicted.pk}: This study has no prediction yet" in html
    assert "Labelled COVID-19: 1 study." in html
    assert list(Review.objects.values_list("study_id", "label")) == [(labelled.pk, Label.COVID)]


def test_admin_studies_changelist_with_reviewed_filter_renders(admin_client, admin_user):
    version = _model_version()
    reviewed = _predicted_study(version)
    unreviewed = _predicted_study(version)
    ReviewFactory(study=reviewed, reviewer=admin_user, label=Label.NORMAL)

    response = admin_client.get(reverse("admin:studies_study_changelist"), {"reviewed": "yes"})

    assert response.status_code == 200
    assert [study.pk for study in response.context["cl"].result_list] == [reviewed.pk]
    assert unreviewed.pk not in {study.pk for study in response.context["cl"].result_list}


def test_admin_activate_action_applies_the_gate_and_says_why_it_refuses(admin_client):
    old = _model_version("cnn-v1", is_active=True, status=ModelVersion.Status.ACTIVE)
    new = _model_version("cnn-v2")

    response = admin_client.post(
        reverse("admin:training_modelversion_changelist"),
        {"action": "activate", "_selected_action": [new.pk]},
        follow=True,
    )

    assert "The promotion gate refuses cnn-v2" in response.content.decode()
    assert ModelVersion.objects.get(is_active=True) == old
    assert not ModelActivation.objects.exists()


def test_admin_activate_action_makes_a_better_version_active_and_logs_who_did_it(admin_client, admin_user):
    old = _model_version("cnn-v1", is_active=True, status=ModelVersion.Status.ACTIVE)
    snapshot = DatasetSnapshot.objects.create(content_hash="h")
    new = _model_version("cnn-v2")
    ModelVersion.objects.filter(pk=new.pk).update(snapshot=snapshot)
    score_cases(old, snapshot, correct=10)
    score_cases(new, snapshot, correct=30)

    admin_client.post(
        reverse("admin:training_modelversion_changelist"), {"action": "activate", "_selected_action": [new.pk]}
    )

    new.refresh_from_db()
    old.refresh_from_db()
    assert (new.is_active, old.is_active, old.status) == (True, False, ModelVersion.Status.RETIRED)
    activation = ModelActivation.objects.get()
    assert (activation.model_version, activation.previous, activation.activated_by) == (new, old, admin_user)
    assert activation.reason == f"admin action by {admin_user.username}"


def test_admin_train_now_is_refused_while_a_run_is_in_progress(admin_client):
    TrainingRun.objects.create(status=TrainingRun.Status.RUNNING)

    response = admin_client.post(reverse("admin:training_trainingrun_train_now"), follow=True)

    assert response.status_code == 200
    assert "is already running" in response.content.decode()
    assert TrainingRun.objects.count() == 1


def test_admin_training_run_pages_render_progress_and_plots(admin_client):
    run = TrainingRun.objects.create(
        status=TrainingRun.Status.SUCCEEDED, progress=1.0, epoch=2, epochs=2, plots={"roc": "training_runs/1/roc.png"}
    )

    changelist = admin_client.get(reverse("admin:training_trainingrun_changelist"))
    change = admin_client.get(reverse("admin:training_trainingrun_change", args=[run.pk]))

    assert changelist.status_code == change.status_code == 200
    assert '<progress max="1" value="1.0"></progress>' in changelist.content.decode()
    assert "Train now" in changelist.content.decode()
    assert reverse("api:training-run-plot", kwargs={"pk": run.pk, "name": "roc"}) in change.content.decode()


def test_model_detail_page_renders_the_card_markdown_and_escapes_raw_html(client, django_user_model):
    card = "# Card\n\n| metric | value |\n|---|---|\n| AUC | 0.91 |\n\n<script>x()</script>"
    version = _model_version(model_card=card)
    client.force_login(reviewer())

    response = client.get(reverse("training:model_detail", args=[version.pk]))

    html = response.content.decode()
    assert response.status_code == 200
    assert "<h1>Card</h1>" in html and "<td>0.91</td>" in html
    assert "<script>x()</script>" not in html and "&lt;script&gt;x()&lt;/script&gt;" in html


def test_web_activate_is_refused_to_non_staff_users(client, django_user_model):
    version = _model_version()
    client.force_login(django_user_model.objects.create_user(username="viewer", password="pw-for-tests"))

    response = client.post(reverse("training:model_activate", args=[version.pk]))

    assert response.status_code == 403
    assert not ModelActivation.objects.exists()


def test_an_admin_action_over_a_selection_with_the_admins_own_upload_reports_it_and_applies_the_rest(
    admin_client, admin_user
):
    version = _model_version()
    other, own = _predicted_study(version), _predicted_study(version)
    Study.objects.filter(pk=own.pk).update(uploaded_by=admin_user)

    response = admin_client.post(
        reverse("admin:studies_study_changelist"),
        {"action": "set_label_covid", "_selected_action": [other.pk, own.pk]},
        follow=True,
    )

    assert response.status_code == 200  # was a bare 403 after labelling the first
    html = response.content.decode()
    assert f"Study {own.pk}: You uploaded this study" in html and "Labelled COVID-19: 1 study." in html


def test_a_staff_site_lead_sees_and_edits_only_their_sites_studies_and_never_writes_an_identifier(client):
    from django.contrib.auth.models import Permission

    from tests.factories import site_lead

    version = _model_version()
    own, foreign = _predicted_study(version), _predicted_study(version)
    Study.objects.filter(pk=foreign.pk).update(site=site_named("elsewhere"))
    lead = site_lead()  # at site_named()'s site
    lead.is_staff = True
    lead.save()
    lead.user_permissions.add(*Permission.objects.filter(codename__in=["view_study", "change_study"]))
    client.force_login(lead)

    assert client.get(reverse("admin:studies_study_change", args=[foreign.pk])).status_code == 302  # not found
    page = reverse("admin:studies_study_change", args=[own.pk])
    assert client.get(page).status_code == 200
    before = own.source
    response = client.post(page, {"view": "PA", "source": "elsewhere", "notes": "Patient DOE^JOHN, MRN 12345678"})
    assert response.status_code == 200 and "patient identifier" in response.content.decode()
    assert client.post(page, {"view": "PA", "source": "elsewhere", "notes": "lateral too"}).status_code == 302
    own.refresh_from_db()
    assert (own.notes, own.source) == ("lateral too", before)  # the source is the site's, not editable
