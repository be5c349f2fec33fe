"""`manage.py bootstrap`: demo users, curated data and an active model, idempotently."""

import json
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.files import File
from django.core.management import call_command

from studies.models import Study
from tests.factories import ModelVersionFactory
from training.models import ModelVersion
from training.registry_files import model_version_export


@pytest.fixture
def starter_dir(db, tmp_path: Path, tiny_model_path: Path) -> Path:
    with tiny_model_path.open("rb") as handle:
        version = ModelVersionFactory(name="starter-tiny", artifact=File(handle, name="m.keras"), metrics={"n": 1})
    version.model_card = "# starter card"
    directory = model_version_export(version=version, directory=tmp_path / "starter")
    version.delete()
    return directory


@pytest.mark.django_db
def test_bootstrap_creates_users_imports_samples_and_activates_the_starter_model(
    settings, tmp_path: Path, starter_dir: Path, capsys
):
    settings.SHARED_DATA_DIR = tmp_path / "absent"
    settings.STARTER_MODEL_DIR = starter_dir
    settings.DEMO_CREDENTIALS_FILE = tmp_path / "var" / "demo-credentials.json"

    call_command("bootstrap")
    first_output = capsys.readouterr().out
    passwords = json.loads(settings.DEMO_CREDENTIALS_FILE.read_text())
    User = get_user_model()
    assert User.objects.get(username="admin").is_superuser
    reviewer = User.objects.get(username="reviewer")
    assert set(reviewer.site_memberships.values_list("role", flat=True)) == {"reviewer"}
    assert reviewer.site_memberships.filter(site__slug="demo-hospital").exists()
    assert User.objects.get(username="lead").site_memberships.filter(role="lead").exists()
    staff = User.objects.get(username="staff")
    assert (
        staff.is_staff
        and staff.has_perm("training.start_trainingrun")
        and staff.has_perm("training.promote_modelversion")
    )
    assert not staff.site_memberships.exists()
    assert User.objects.get(username="uploader").check_password(passwords["uploader"])
    assert passwords["reviewer"] in first_output
    assert Study.objects.count() == 40
    active = ModelVersion.objects.get(is_active=True)
    assert active.name == "starter-tiny" and active.model_card == "# starter card"

    call_command("bootstrap")
    assert json.loads(settings.DEMO_CREDENTIALS_FILE.read_text()) == passwords
    assert Study.objects.count() == 40 and ModelVersion.objects.count() == 1


@pytest.mark.django_db
def test_export_then_import_model_round_trips_the_metadata(starter_dir: Path):
    call_command("import_model", str(starter_dir), "--activate", verbosity=0)
    version = ModelVersion.objects.get()
    assert version.is_active and version.metrics == {"n": 1} and version.input_size == 32
    assert Path(version.artifact.path).read_bytes() == (starter_dir / "model.keras").read_bytes()


@pytest.mark.django_db
def test_production_bootstrap_creates_the_admin_from_the_environment_and_never_prints_or_stores_a_password(
    settings, tmp_path: Path, starter_dir: Path, capsys, monkeypatch
):
    settings.DEMO_USERS = False
    settings.SHARED_DATA_DIR = tmp_path / "absent"
    settings.STARTER_MODEL_DIR = starter_dir
    settings.DEMO_CREDENTIALS_FILE = tmp_path / "var" / "demo-credentials.json"
    monkeypatch.setenv("BOOTSTRAP_ADMIN_PASSWORD", "a-Long-secret-4711")

    call_command("bootstrap", "--no-data")

    output = capsys.readouterr().out
    User = get_user_model()
    assert list(User.objects.values_list("username", flat=True)) == ["admin"]
    assert User.objects.get().is_superuser and User.objects.get().check_password("a-Long-secret-4711")
    assert "a-Long-secret-4711" not in output and "password not shown" in output
    assert not settings.DEMO_CREDENTIALS_FILE.exists()


@pytest.mark.django_db
def test_production_bootstrap_without_a_password_creates_no_account(settings, tmp_path: Path, capsys, monkeypatch):
    settings.DEMO_USERS = False
    settings.SHARED_DATA_DIR = tmp_path / "absent"
    monkeypatch.delenv("BOOTSTRAP_ADMIN_PASSWORD", raising=False)
    ModelVersionFactory(is_active=True)

    call_command("bootstrap", "--no-data")

    assert not get_user_model().objects.exists()
    assert "No administrator created" in capsys.readouterr().out
