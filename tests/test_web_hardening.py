"""Web hardening: sanitised model cards, a Content-Security-Policy the pages keep, files erased with their study."""

import re
from pathlib import Path

import pytest
from django.urls import reverse

from studies.models import Prediction, Study
from studies.services import study_delete
from tests.factories import ModelVersionFactory, PredictionFactory, StudyFactory, UserFactory
from training.models import TrainingRun

pytestmark = pytest.mark.django_db

# json_script data blocks (type="application/json") are never executed, so the policy allows them.
INLINE = [
    (re.compile(r"<script(?![^>]*\b(src=|type=\"application/json\"))[^>]*>", re.I), "an inline <script>"),
    (re.compile(r"<style\b", re.I), "a <style> element"),
    (re.compile(r"\sstyle\s*=", re.I), "a style attribute"),
    (re.compile(r"\son[a-z]+\s*=", re.I), "an on* event handler attribute"),
    (re.compile(r"javascript:", re.I), "a javascript: URL"),
]


@pytest.fixture
def staff(db):
    return UserFactory(groups=["reviewer", "uploader"], is_staff=True, is_superuser=True)


def test_a_javascript_link_in_a_model_card_is_not_a_live_link(client, staff):
    card = (
        "# Card\n\n[click](javascript:alert(1)) [data](data:text/html,x) [ok](https://example.org/a)"
        "\n\n| a |\n|---|\n| 1 |"
    )
    version = ModelVersionFactory(model_card=card)
    client.force_login(staff)

    html = client.get(reverse("training:model_detail", args=[version.pk])).content.decode()

    assert "javascript:" not in html and "data:text/html" not in html
    assert 'href="https://example.org/a"' in html
    assert "<td>1</td>" in html


def test_pages_send_a_content_security_policy_with_no_inline_script_or_third_party(client, staff):
    client.force_login(staff)
    policy = client.get(reverse("studies:list"))["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy and "http" not in policy
    assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy


def test_no_page_carries_inline_script_style_or_event_handlers(client, staff):
    prediction = PredictionFactory()
    study = prediction.study
    run = TrainingRun.objects.create(status=TrainingRun.Status.SUCCEEDED, model_version=prediction.model_version)
    client.force_login(staff)
    urls = [
        reverse("studies:list"),
        reverse("studies:upload"),
        reverse("studies:detail", args=[study.pk]),
        reverse("studies:queue"),
        reverse("studies:audit"),
        reverse("training:models"),
        reverse("training:model_detail", args=[prediction.model_version.pk]),
        reverse("training:run_detail", args=[run.pk]),
        reverse("admin:studies_study_changelist"),
        reverse("admin:studies_study_change", args=[study.pk]),
        reverse("admin:training_trainingrun_changelist"),
        reverse("api:docs"),
    ]
    found = []
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        found += [f"{url}: {what}" for pattern, what in INLINE if pattern.search(response.content.decode())]
    assert found == []


def test_the_api_docs_load_swagger_ui_and_its_script_from_this_server(client):
    html = client.get(reverse("api:docs")).content.decode()
    sources = re.findall(r'<script src="([^"]+)"', html)
    assert sources and all(src.startswith("/") for src in sources)
    assert any("drf_spectacular_sidecar" in src for src in sources)
    script = client.get(sources[-1].replace("&amp;", "&"))
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()


def _files(media_root: Path) -> set[str]:
    return {str(p.relative_to(media_root)) for p in media_root.rglob("*") if p.is_file()}


def _study_with_files(media_root: Path) -> Study:
    from django.core.files.base import ContentFile

    prediction = PredictionFactory()
    prediction.heatmap.save("heat.jpg", ContentFile(b"jpeg"), save=True)
    study = prediction.study
    study.rendition.save("rendition.png", ContentFile(b"png"), save=True)
    assert len(_files(media_root) - {prediction.model_version.artifact.name}) == 3
    return study


def test_deleting_a_study_deletes_its_image_rendition_and_heatmaps_once_committed(
    media_root, django_capture_on_commit_callbacks
):
    study = _study_with_files(media_root)
    artifact = Prediction.objects.get().model_version.artifact.name
    with django_capture_on_commit_callbacks(execute=True):
        study_delete(study=study)
    assert not Study.objects.exists() and not Prediction.objects.exists()
    assert _files(media_root) == {artifact}


def test_deleting_studies_in_the_admin_deletes_their_files(
    client, staff, media_root, django_capture_on_commit_callbacks
):
    study = _study_with_files(media_root)
    other = StudyFactory()
    artifact = Prediction.objects.get().model_version.artifact.name
    client.force_login(staff)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:studies_study_changelist"),
            {"action": "delete_selected", "_selected_action": [study.pk, other.pk], "post": "yes"},
        )
    assert response.status_code == 302
    assert not Study.objects.exists()
    assert _files(media_root) == {artifact}
