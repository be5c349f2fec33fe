"""Curated dataset snapshots: immutable (study, label, split) lists with a content hash."""

import hashlib
from collections import Counter

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from studies.models import Patient, Review, Split, Study
from studies.selectors import study_annotate_labels
from training.models import DatasetSnapshot, SnapshotItem


def split_for_patient(ref: str, *, val_fraction: float, test_fraction: float) -> str:
    """A stable, patient-level split from a hash of the pseudonymous key."""
    position = int(hashlib.sha256(ref.encode()).hexdigest()[:12], 16) / float(16**12)
    if position < test_fraction:
        return Split.TEST.value
    if position < test_fraction + val_fraction:
        return Split.VAL.value
    return Split.TRAIN.value


def _assign_splits(patient_ids: set[int]) -> dict[int, str]:
    """Give unassigned patients a split once; assigned ones keep theirs (the test split is frozen)."""
    config = settings.TRAINING
    patients = Patient.objects.select_for_update().filter(pk__in=patient_ids)
    splits = {}
    for patient in patients:
        if not patient.split:
            patient.split = split_for_patient(
                patient.ref, val_fraction=config["VAL_FRACTION"], test_fraction=config["TEST_FRACTION"]
            )
            patient.save(update_fields=["split"])
        splits[patient.pk] = patient.split
    return splits


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
    splits = _assign_splits({study.patient_id for study in studies})
    digest = hashlib.sha256()
    rows = []
    items = []
    for study in studies:
        split = splits[study.patient_id]
        digest.update(f"{study.id}:{study.sha256}:{study.final_label}:{split}\n".encode())
        rows.append((study.final_label, split, study.source))
        items.append(SnapshotItem(study=study, label=study.final_label, split=split))
    last_review = Review.objects.order_by("-id").values_list("id", flat=True).first() or 0
    snapshot = DatasetSnapshot.objects.create(
        content_hash=digest.hexdigest(), counts=_counts(rows), created_by=user, last_review_id=last_review
    )
    for item in items:
        item.snapshot = snapshot
    SnapshotItem.objects.bulk_create(items, batch_size=500)
    return snapshot
