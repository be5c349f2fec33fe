"""First start of the embedded platform: demo users, curated data, an active model.

Idempotent: run it on every `make run`; it only does what is missing.
"""

import json
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand

from studies.models import Review
from training.models import ModelVersion
from training.registry_files import model_version_import
from training.selectors import model_version_get_active
from training.services import model_version_promote

DEMO_USERS = {
    "admin": {"is_staff": True, "is_superuser": True, "groups": ["reviewer", "adjudicator"]},
    "reviewer": {"groups": ["reviewer"]},
    "adjudicator": {"groups": ["reviewer", "adjudicator"]},
    "uploader": {"groups": ["uploader"]},
}


class Command(BaseCommand):
    help = "Create demo users, import curated data and make sure an active model exists."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-data", action="store_true", help="Skip the dataset import.")
        parser.add_argument("--train", action="store_true", help="Train a model even if a starter model ships.")

    def handle(self, *args, no_data: bool, train: bool, **options) -> None:
        credentials = self._demo_users()
        if not no_data:
            self._import_data()
        self._ensure_model(train=train)
        self.stdout.write(self.style.SUCCESS(f"Demo users (passwords kept in {settings.DEMO_CREDENTIALS_FILE}):"))
        for username, password in credentials.items():
            self.stdout.write(f"  {username:<9} {password}")

    def _demo_users(self) -> dict[str, str]:
        path = settings.DEMO_CREDENTIALS_FILE
        known = json.loads(path.read_text()) if path.exists() else {}
        User = get_user_model()
        for username, spec in DEMO_USERS.items():
            user, created = User.objects.get_or_create(
                username=username,
                defaults={"is_staff": spec.get("is_staff", False), "is_superuser": spec.get("is_superuser", False)},
            )
            if created or username not in known:
                known[username] = secrets.token_urlsafe(9)
                user.set_password(known[username])
                user.save()
            user.groups.add(*Group.objects.filter(name__in=spec["groups"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known, indent=1))
        path.chmod(0o600)
        return known

    def _import_data(self) -> None:
        if Review.objects.exists():
            return
        for folder in (settings.SHARED_DATA_DIR, settings.SAMPLES_DIR):
            if (folder / "labels.csv").is_file():
                self.stdout.write(f"Importing curated studies from {folder} ...")
                call_command("import_dataset", str(folder), verbosity=1)
                return
        self.stdout.write(self.style.WARNING("No dataset found to import (samples/ or ../shared/data/cxr)."))

    def _ensure_model(self, *, train: bool) -> None:
        """Keep the active model; else the bundled starter model; else the newest version; else train."""
        starter = settings.STARTER_MODEL_DIR
        if train:
            call_command("train")
        elif model_version_get_active() is not None:
            return
        elif not ModelVersion.objects.exists() and (starter / "metadata.json").is_file():
            version = model_version_import(directory=starter)
            model_version_promote(model_version=version, user=None, reason="Bundled starter model (bootstrap).")
            self.stdout.write(self.style.SUCCESS(f"Activated the bundled starter model {version.name}."))
        elif ModelVersion.objects.exists():
            version = ModelVersion.objects.first()
            model_version_promote(model_version=version, user=None, reason="No active model; the newest activated.")
        else:
            self.stdout.write("No model registered: training one now (a few minutes on 2 CPU cores) ...")
            call_command("train")
