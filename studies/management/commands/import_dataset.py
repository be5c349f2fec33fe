"""Import labelled images as reviewed studies (idempotent by sha256).

python manage.py import_dataset ../shared/data/cxr --labels ../shared/data/cxr/labels.csv
"""

import csv
import hashlib
import io
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from studies.services import image_check, study_import

IMPORT_USERNAME = "dataset-import"


def import_reviewer():
    """The account that signs imported labels; it cannot log in."""
    user, created = get_user_model().objects.get_or_create(username=IMPORT_USERNAME, defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


class Command(BaseCommand):
    help = "Import labelled chest X-rays (a folder and a labels CSV) as reviewed studies."

    def add_arguments(self, parser) -> None:
        parser.add_argument("directory", type=Path, help="Folder the CSV's paths are relative to.")
        parser.add_argument(
            "--labels", type=Path, help="CSV with path,label[,source,patient,view]; default DIR/labels.csv"
        )
        parser.add_argument("--sources", default="", help="Only these sources (comma-separated).")
        parser.add_argument("--exclude-sources", default="", help="Skip these sources (comma-separated).")
        parser.add_argument("--limit", type=int, default=0, help="Import at most this many rows.")

    def handle(
        self, *args, directory: Path, labels: Path | None, sources: str, exclude_sources: str, limit: int, **options
    ) -> None:
        labels = labels or directory / "labels.csv"
        if not labels.is_file():
            raise CommandError(f"Labels file not found: {labels}")
        with labels.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        missing = {"path", "label"} - set(rows[0].keys() if rows else [])
        if missing:
            raise CommandError(f"{labels} lacks the column(s) {', '.join(sorted(missing))}.")
        only = {s for s in sources.split(",") if s}
        skip = {s for s in exclude_sources.split(",") if s}
        rows = [r for r in rows if (not only or r.get("source") in only) and r.get("source") not in skip]
        if limit:
            rows = rows[:limit]
        reviewer = import_reviewer()
        created = existing = 0
        errors: list[str] = []
        for row in tqdm(rows, desc="Importing", unit="image", disable=options["verbosity"] < 1):
            path = directory / row["path"]
            try:
                data = path.read_bytes()
                checked = image_check(
                    file=io.BytesIO(data),
                    source=row.get("source", ""),
                    patient_ref=row.get("patient", ""),
                    rendition=True,  # imported studies are never predicted: no worker makes it
                )
                _, was_created = study_import(
                    checked=checked,
                    label=row["label"].strip(),
                    reviewer=reviewer,
                    patient_ref=row.get("patient", ""),
                    view=row.get("view", ""),
                    source=row.get("source", ""),
                    upload_sha256=hashlib.sha256(data).hexdigest(),
                )
            except (OSError, ValidationError) as exc:
                errors.append(f"{row['path']}: {exc}")
                continue
            created += was_created
            existing += not was_created
        self.stdout.write(self.style.SUCCESS(f"Imported {created} new studies; {existing} were already there."))
        for error in errors:
            self.stderr.write(f"skipped {error}")
