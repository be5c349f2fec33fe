"""Export a dataset snapshot as a zip: images plus labels.csv in the dev set's columns."""

import csv
import io
import tempfile
import zipfile
from typing import IO

from studies.services import patient_ref_export, study_file_deidentified
from training.models import DatasetSnapshot
from training.selectors import snapshot_items_current

EXPORT_COLUMNS = ["path", "label", "source", "patient", "view", "sex", "age"]


def snapshot_export_zip(*, snapshot: DatasetSnapshot) -> IO[bytes]:
    """Write the zip to a spooled temporary file and return it, rewound; withdrawn (erased) cases are left out."""
    output = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115  (the response closes it)
    labels = io.StringIO()
    writer = csv.DictWriter(labels, fieldnames=EXPORT_COLUMNS)
    writer.writeheader()
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_STORED) as archive:
        for item in snapshot_items_current(snapshot):
            study = item.study
            # Only de-identified files leave: stored ones are; older ones are de-identified on the way out.
            data, suffix = study_file_deidentified(study=study)
            path = f"images/{item.label}/study-{study.pk}.{suffix}"
            archive.writestr(path, data)
            writer.writerow(
                {
                    "path": path,
                    "label": item.label,
                    "source": study.source,
                    "patient": patient_ref_export(study=study),
                    "view": study.view,
                    "sex": "",
                    "age": "",
                }
            )
        archive.writestr("labels.csv", labels.getvalue())
    output.seek(0)
    return output
