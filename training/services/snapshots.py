"""Curated dataset snapshots: immutable (study, label, split) lists with a content hash."""

import hashlib
from collections import Counter, defaultdict

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from studies.models import Patient, Review, Split, Study
from studies.selectors import study_annotate_labels
from training.models import DatasetSnapshot, SnapshotItem


def split_targets(total: int, *, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """How many of a (source, class) stratum's ``total`` patients belong in test and in val.

    A stratum of 3 or more patients has at least one test patient, of 5 or more at least one
    validation patient (a new site's own calibration); the rest, most of it, trains."""
    test = max(1, round(test_fraction * total)) if total >= 3 else 0
    val = max(1, round(val_fraction * total)) if total >= 5 else 0
    return test, val


def _hash_order(ref: str) -> str:
    return hashlib.sha256(ref.encode()).hexdigest()


def _assign_splits(first_studies: dict[int, Study]) -> dict[int, str]:
    """Give unassigned patients a split once, stratified by source and class; assigned ones keep theirs
    (the test split never loses a case).

    ``first_studies``: each patient's first curated study (its source and label place the patient).
    Within each (source, class) stratum, new patients, in the order of a hash of their key, fill
    the test and validation places the stratum is short of (``split_targets`` of its new total),
    then train. A new hospital therefore gets test and validation patients of every class it sends."""
    config = settings.TRAINING
    patients = {p.pk: p for p in Patient.objects.select_for_update().filter(pk__in=first_studies)}
    strata: dict[tuple[str, str], list[Patient]] = defaultdict(list)
    for patient_id, study in first_studies.items():
        strata[(study.source, study.final_label)].append(patients[patient_id])
    for members in strata.values():
        placed = Counter(p.split for p in members if p.split)
        new = sorted((p for p in members if not p.split), key=lambda p: _hash_order(p.ref))
        test, val = split_targets(
            len(members), val_fraction=config["VAL_FRACTION"], test_fraction=config["TEST_FRACTION"]
        )
        for patient in new:
            if placed[Split.TEST] < test:
                patient.split = Split.TEST
            elif placed[Split.VAL] < val:
                patient.split = Split.VAL
            else:
                patient.split = Split.TRAIN
            placed[patient.split] += 1
            patient.save(update_fields=["split"])
    return {pk: str(patient.split) for pk, patient in patients.items()}


def _nested(pairs: Counter) -> dict[str, dict[str, int]]:
    nested: dict[str, dict[str, int]] = {}
    for (outer, inner), count in sorted(pairs.items()):
        nested.setdefault(outer, {})[inner] = count
    return nested


def _counts(rows: list[tuple[str, str, str]]) -> dict:
    """rows: (label, split, source) → counts by split, class, source and their pairs."""
    return {
        "total": len(rows),
        "by_split": dict(Counter(split for _, split, _ in rows)),
        "by_class": dict(Counter(label for label, _, _ in rows)),
        "by_source": dict(Counter(source or "unknown" for _, _, source in rows)),
        "by_split_class": _nested(Counter((split, label) for label, split, _ in rows)),
        "by_source_class": _nested(Counter((source or "unknown", label) for label, _, source in rows)),
    }


@transaction.atomic
def snapshot_create(*, user: AbstractBaseUser | None = None) -> DatasetSnapshot:
    """Freeze the curated dataset now: every reviewed study with its final label.

    A study whose image duplicates an earlier one (same sha256) is left out, so the
    same image never sits in two splits.
    """
    reviewed = study_annotate_labels(Study.objects.all()).filter(is_reviewed=True).order_by("id")
    seen: set[str] = set()
    studies = []
    for study in reviewed:
        if study.sha256 not in seen:
            seen.add(study.sha256)
            studies.append(study)
    first_studies: dict[int, Study] = {}
    for study in studies:
        first_studies.setdefault(study.patient_id, study)
    splits = _assign_splits(first_studies)
    digest = hashlib.sha256()
    rows = []
    items = []
    for study in studies:
        split = splits[study.patient_id]
        digest.update(f"{study.id}:{study.sha256}:{study.final_label}:{split}\n".encode())
        rows.append((study.final_label, split, study.source))
        items.append(SnapshotItem(study=study, study_key=study.id, label=study.final_label, split=split))
    last_review = Review.objects.order_by("-id").values_list("id", flat=True).first() or 0
    snapshot = DatasetSnapshot.objects.create(
        content_hash=digest.hexdigest(), counts=_counts(rows), created_by=user, last_review_id=last_review
    )
    for item in items:
        item.snapshot = snapshot
    SnapshotItem.objects.bulk_create(items, batch_size=500)
    return snapshot
