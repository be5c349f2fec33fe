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
    assert User.objects.get(username="reviewer").groups.filter(name="reviewer").exists()
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
