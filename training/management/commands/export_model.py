from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from training.models import ModelVersion
from training.registry_files import model_version_export


class Command(BaseCommand):
    help = "Write a model version to a folder (model.keras, metadata.json, MODEL_CARD.md)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("version", help="Model version name or id; 'active' for the active one.")
        parser.add_argument("directory", type=Path)

    def handle(self, *args, version: str, directory: Path, **options) -> None:
        versions = ModelVersion.objects.all()
        if version == "active":
            found = versions.filter(is_active=True).first()
        elif version.isdigit():
            found = versions.filter(pk=int(version)).first()
        else:
            found = versions.filter(name=version).first()
        if found is None:
            raise CommandError(f"No model version {version!r}.")
        model_version_export(version=found, directory=directory)
        self.stdout.write(self.style.SUCCESS(f"Exported {found.name} to {directory}"))
