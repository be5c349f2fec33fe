"""First start: curated data, an active model, and accounts.

Embedded/dev mode (``DEMO_USERS`` on, the default of ``config.settings.base``): demo users with
random passwords kept in ``DEMO_CREDENTIALS_FILE`` and printed. Production (``DEMO_USERS`` off):
no demo user and no password is ever printed or written; an administrator is created only from
``BOOTSTRAP_ADMIN_PASSWORD`` in the environment or, on a terminal, a prompt.

Idempotent: run it on every `make run`; it only does what is missing.
"""

import getpass
import json
import os
import secrets
import sys

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand

from studies.models import Review, Site, SiteMembership
from studies.sites import membership_set, site_get_or_create
from training.models import ModelVersion
from training.registry_files import model_version_import
from training.selectors import model_version_get_active
from training.services import model_version_promote

# Demo accounts (embedded mode only). ``role`` is held at every site; ``staff`` manages models
# through the ml-lead group's permissions and has no site.
DEMO_SITE = "Demo Hospital"
DEMO_USERS = {
    "admin": {"is_staff": True, "is_superuser": True, "groups": [], "role": None},
    "staff": {"is_staff": True, "groups": ["ml-lead"], "role": None},
    "lead": {"groups": [], "role": SiteMembership.Role.LEAD},
    "reviewer": {"groups": [], "role": SiteMembership.Role.REVIEWER},
    "uploader": {"groups": [], "role": SiteMembership.Role.UPLOADER},
    "adjudicator": {"groups": ["adjudicator"], "role": SiteMembership.Role.REVIEWER},
}


class Command(BaseCommand):
    help = "Create demo users, import curated data and make sure an active model exists."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-data", action="store_true", help="Skip the dataset import.")
        parser.add_argument("--train", action="store_true", help="Train a model even if a starter model ships.")

    def handle(self, *args, no_data: bool, train: bool, **options) -> None:
        if not no_data:
            self._import_data()
        self._ensure_model(train=train)
        if not settings.DEMO_USERS:
            self._admin_from_environment()
            return
        credentials = self._demo_users()
        self.stdout.write(self.style.SUCCESS(f"Demo users (passwords kept in {settings.DEMO_CREDENTIALS_FILE}):"))
        for username, password in credentials.items():
            self.stdout.write(f"  {username:<9} {password}")

    def _demo_users(self) -> dict[str, str]:
        path = settings.DEMO_CREDENTIALS_FILE
        known = json.loads(path.read_text()) if path.exists() else {}
        User = get_user_model()
        site_get_or_create(name=DEMO_SITE)
        sites = list(Site.objects.all())  # the demo site and every imported source
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
            for site in sites if spec["role"] else []:
                membership_set(user=user, site=site, role=spec["role"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known, indent=1))
        path.chmod(0o600)
        return known

    def _admin_from_environment(self) -> None:
        """Production: an administrator from BOOTSTRAP_ADMIN_PASSWORD or a prompt; never printed or stored."""
        User = get_user_model()
        username = settings.BOOTSTRAP_ADMIN_USERNAME
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("An administrator exists; no account created.")
            return
        # A secret used once: read here from the environment, never kept in settings.
        password = os.environ.get("BOOTSTRAP_ADMIN_PASSWORD", "")
        if not password and sys.stdin.isatty():
            password = getpass.getpass(f"Password for the new administrator {username!r}: ")
        if not password:
            self.stdout.write(
                self.style.WARNING(
                    "No administrator created: set BOOTSTRAP_ADMIN_PASSWORD, run bootstrap on a terminal, "
                    "or use `manage.py createsuperuser`."
                )
            )
            return
        User.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(self.style.SUCCESS(f"Administrator {username!r} created (password not shown)."))

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
