from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from training.models import ModelVersion
from training.registry_files import model_version_import
from training.services import model_version_promote


class Command(BaseCommand):
    help = "Register a model exported by export_model; --activate makes it the active model."

    def add_arguments(self, parser) -> None:
        parser.add_argument("directory", type=Path)
        parser.add_argument("--activate", action="store_true")

    def handle(self, *args, directory: Path, activate: bool, **options) -> None:
        if not (directory / "metadata.json").is_file():
            raise CommandError(f"{directory} has no metadata.json; export it with export_model.")
        version = model_version_import(directory=directory)
        if activate:
            model_version_promote(
                model_version=version,
                user=None,
                reason=f"Imported from {directory} and activated from the command line.",
                override=True,
            )
        self.stdout.write(self.style.SUCCESS(f"Registered {version.name} ({version.status})"))
        self.stdout.write(f"{ModelVersion.objects.count()} model versions registered.")
