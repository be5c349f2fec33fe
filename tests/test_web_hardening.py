"""Web hardening: sanitised model cards, a Content-Security-Policy the pages keep, files erased with their study,
patient images kept out of caches, the production settings clean for check --deploy and trusting X-Forwarded-Proto
only from the configured proxy, the compose file publishing the web port on 127.0.0.1."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.files.base import ContentFile
from django.urls import reverse

from studies.models import Prediction, Study
from studies.services import study_delete
from tests.factories import ModelVersionFactory, PredictionFactory, StudyFactory, UserFactory, reviewer
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


def test_images_thumbnails_and_heatmaps_are_sent_for_no_cache_to_store(api_client):
    prediction = PredictionFactory()
    prediction.heatmap.save("heat.jpg", ContentFile(b"\xff\xd8\xff\xe0 heat"), save=True)
    study = prediction.study
    api_client.force_authenticate(reviewer())

    for url in (f"/api/studies/{study.pk}/image/", f"/api/studies/{study.pk}/image/?size=64"):
        response = api_client.get(url)
        assert response.status_code == 200
        assert sorted(response["Cache-Control"].split(", ")) == ["no-store", "private"], url
    heatmap = api_client.get(f"/api/studies/{study.pk}/heatmap/")
    assert heatmap.status_code == 200 and sorted(heatmap["Cache-Control"].split(", ")) == ["no-store", "private"]


def _production(*args: str, **environment: str) -> subprocess.CompletedProcess:
    """manage.py with config.settings.production and only what it requires (its defaults otherwise)."""
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": "x" * 60 + "-a-long-random-production-key",
        "DEIDENTIFICATION_KEY": "production-deidentification-key",
        "ALLOWED_HOSTS": "cxr.example.org",
        "DATABASE_URL": "sqlite:////tmp/never-opened.sqlite3",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        **environment,
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True
    )


def test_the_production_settings_pass_check_deploy_with_warnings_as_failures():
    result = _production("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.parametrize(("trust", "header"), [(None, "None"), ("true", "('HTTP_X_FORWARDED_PROTO', 'https')")])
def test_django_reads_x_forwarded_proto_itself_only_when_told_to(trust, header):
    code = "from django.conf import settings; print(settings.SECURE_PROXY_SSL_HEADER)"
    result = _production("shell", "-v", "0", "-c", code, **({"TRUST_X_FORWARDED_PROTO": trust} if trust else {}))
    assert result.stdout.strip() == header, result.stderr


def test_the_compose_file_publishes_the_web_port_on_127_0_0_1_unless_told_otherwise():
    compose = yaml.safe_load((Path(settings.BASE_DIR) / "docker-compose.yml").read_text())
    assert compose["services"]["web"]["ports"] == ["${WEB_BIND:-127.0.0.1}:${WEB_PORT:-8000}:8000"]
    assert "TRUST_X_FORWARDED_PROTO" not in compose["x-app-env"]  # gunicorn trusts the header from the proxy alone


def test_the_images_collectstatic_step_imports_the_production_settings_with_only_its_own_variables():
    """docker compose cannot run here; the Dockerfile's build step can: its dummy variables must be all
    the production settings require (DEIDENTIFICATION_KEY was missing, and the image did not build)."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    dockerfile = (root / "platform" / "Dockerfile").read_text()
    step = re.search(r"RUN ((?:[A-Z_]+=\S+ \\\n\s*)+)python manage.py collectstatic", dockerfile)
    assert step, "the Dockerfile's collectstatic step was not found"
    variables = dict(re.findall(r"([A-Z_]+)=(\S+)", step.group(1)))
    env = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "config.settings.production", **variables}
    done = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--dry-run", "-v0"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.django_db
def test_editing_a_study_in_the_admin_writes_only_what_the_form_changed():
    from django.contrib import admin

    from studies.admin import StudyAdmin, StudyAdminForm

    study = StudyFactory(status=Study.Status.PROCESSING)
    opened = Study.objects.get(pk=study.pk)  # the form opened while its batch ran
    Study.objects.filter(pk=study.pk).update(status=Study.Status.PREDICTED, rendition="renditions/r.jpg")
    form = StudyAdminForm(data={"view": "PA", "notes": "checked by the lead"}, instance=opened)
    assert form.is_valid(), form.errors
    StudyAdmin(Study, admin.site).save_model(None, form.save(commit=False), form, change=True)
    saved = Study.objects.get(pk=study.pk)
    assert (saved.notes, saved.view) == ("checked by the lead", "PA")
    assert saved.status == Study.Status.PREDICTED and saved.rendition.name == "renditions/r.jpg"
