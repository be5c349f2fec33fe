"""`manage.py import_dataset` on the bundled samples."""

from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from studies.models import Review, Study


@pytest.mark.django_db
def test_samples_import_as_reviewed_studies_and_a_second_import_adds_nothing():
    call_command("import_dataset", str(settings.SAMPLES_DIR), verbosity=0)
    assert Study.objects.count() == 40
    assert Review.objects.count() == 40
    assert set(Study.objects.values_list("status", flat=True)) == {Study.Status.IMPORTED}
    assert Study.objects.filter(source="hannover", reviews__label="covid").count() == 14
    assert Study.objects.get(patient__ref="hannover:327d82ca").view == "AP"

    call_command("import_dataset", str(settings.SAMPLES_DIR), verbosity=0)
    assert Study.objects.count() == 40


@pytest.mark.django_db
def test_bad_rows_are_reported_and_skipped_while_good_rows_import(tmp_path: Path, capsys):
    sample = next((settings.SAMPLES_DIR / "images" / "covid").iterdir())
    (tmp_path / "good.jpg").write_bytes(sample.read_bytes())
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "labels.csv").write_text(
        "path,label,source,patient\n"
        "good.jpg,covid,site,p1\n"
        "broken.jpg,normal,site,p2\n"
        "missing.jpg,normal,site,p3\n"
        "good.jpg,tuberculosis,site,p4\n"
    )
    call_command("import_dataset", str(tmp_path), verbosity=0)
    assert Study.objects.count() == 1
    errors = capsys.readouterr().err
    assert "broken.jpg" in errors and "missing.jpg" in errors


@pytest.mark.django_db
def test_a_labels_file_without_the_label_column_is_refused(tmp_path: Path):
    from django.core.management.base import CommandError

    (tmp_path / "labels.csv").write_text("path,diagnosis\nx.jpg,covid\n")
    with pytest.raises(CommandError, match="lacks the column"):
        call_command("import_dataset", str(tmp_path))


@pytest.mark.django_db
def test_an_import_adds_nothing_for_images_stored_before_de_identification():
    """Rows stored with the upload's own hash (before files were re-encoded) are still recognised."""
    import hashlib

    from tests.factories import StudyFactory

    sample = settings.SAMPLES_DIR / "images" / "covid" / "hannover-00.jpg"
    StudyFactory(sha256=hashlib.sha256(sample.read_bytes()).hexdigest())
    call_command("import_dataset", str(settings.SAMPLES_DIR), "--sources", "hannover", "--limit", "1", verbosity=0)
    assert Study.objects.count() == 1
