"""Curated dataset snapshots and patient-level, frozen splits."""

import pytest

from studies.models import Patient
from tests.factories import PatientFactory, ReviewFactory, StudyFactory
from training.models import SnapshotItem
from training.services import snapshot_create
from training.services.snapshots import split_targets


def _splits_of(snapshot, source: str, label: str) -> list[str]:
    return sorted(snapshot.items.filter(study__source=source, label=label).values_list("split", flat=True))


def test_every_stratum_of_three_or_more_patients_gets_a_test_place_and_of_five_a_validation_place():
    assert split_targets(2, val_fraction=0.15, test_fraction=0.2) == (0, 0)
    assert split_targets(3, val_fraction=0.15, test_fraction=0.2) == (1, 0)
    assert split_targets(5, val_fraction=0.15, test_fraction=0.2) == (1, 1)
    assert split_targets(10, val_fraction=0.15, test_fraction=0.2) == (2, 2)
    assert split_targets(1000, val_fraction=0.15, test_fraction=0.2) == (200, 150)


@pytest.mark.django_db
def test_a_new_site_gets_test_validation_and_mostly_training_patients_of_each_class():
    for i in range(40):
        ReviewFactory(study=StudyFactory(source="old", label="normal", seed=i), label="normal")
    first = snapshot_create()
    for i in range(10):
        for label in ("covid", "normal"):
            ReviewFactory(study=StudyFactory(source="new", label=label, seed=100 + i), label=label)
    second = snapshot_create()
    for label in ("covid", "normal"):
        assert _splits_of(second, "new", label) == ["test"] * 2 + ["train"] * 6 + ["val"] * 2
    assert _splits_of(second, "old", "normal") == _splits_of(first, "old", "normal")  # nobody moved
    assert _splits_of(first, "old", "normal").count("test") == 8


@pytest.mark.django_db
def test_new_patients_of_a_stratum_fill_its_test_places_first():
    for i in range(4):
        ReviewFactory(study=StudyFactory(source="s", label="covid", seed=i), label="covid")
    first = snapshot_create()
    assert _splits_of(first, "s", "covid") == ["test", "train", "train", "train"]
    for i in range(6):
        ReviewFactory(study=StudyFactory(source="s", label="covid", seed=10 + i), label="covid")
    second = snapshot_create()
    assert _splits_of(second, "s", "covid") == ["test"] * 2 + ["train"] * 6 + ["val"] * 2
    old_ids = set(first.items.values_list("study_id", flat=True))
    assert {i.study_id: i.split for i in second.items.filter(study_id__in=old_ids)} == {
        i.study_id: i.split for i in first.items.all()
    }


@pytest.mark.django_db
def test_snapshot_holds_reviewed_studies_with_their_latest_label_and_counts():
    study = StudyFactory(source="site-a")
    ReviewFactory(study=study, label="covid")
    ReviewFactory(study=study, label="pneumonia")
    StudyFactory()  # not reviewed: not curated
    snapshot = snapshot_create()
    items = list(snapshot.items.all())
    assert [(i.study_id, i.label) for i in items] == [(study.id, "pneumonia")]
    assert snapshot.counts["total"] == 1
    assert snapshot.counts["by_source"] == {"site-a": 1}
    assert snapshot.counts["by_class"] == {"pneumonia": 1}


@pytest.mark.django_db
def test_all_studies_of_a_patient_land_in_the_same_split():
    patient = PatientFactory()
    for _ in range(4):
        ReviewFactory(study=StudyFactory(patient=patient))
    snapshot = snapshot_create()
    assert len({item.split for item in snapshot.items.all()}) == 1


@pytest.mark.django_db
def test_the_test_split_is_frozen_when_fractions_change_later(settings):
    reviews = [ReviewFactory() for _ in range(30)]
    first = snapshot_create()
    test_before = set(first.items.filter(split="test").values_list("study_id", flat=True))
    assert test_before

    settings.TRAINING = {**settings.TRAINING, "TEST_FRACTION": 0.0, "VAL_FRACTION": 0.0}
    ReviewFactory()  # a new patient: extends the splits
    second = snapshot_create()
    test_after = set(second.items.filter(split="test").values_list("study_id", flat=True))
    assert test_after == test_before
    assert second.items.count() == len(reviews) + 1
    assert Patient.objects.filter(split="").count() == 0


@pytest.mark.django_db
def test_snapshots_are_immutable_and_hash_their_content():
    ReviewFactory(label="normal")
    first = snapshot_create()
    same = snapshot_create()
    assert same.content_hash == first.content_hash
    ReviewFactory(study=first.items.get().study, label="covid")
    changed = snapshot_create()
    assert changed.content_hash != first.content_hash
    assert first.items.get().label == "normal"  # the earlier snapshot still says what it said
    assert SnapshotItem.objects.filter(snapshot=changed).get().label == "covid"


@pytest.mark.django_db
def test_a_duplicate_image_enters_the_snapshot_once():
    original = StudyFactory(seed=7)
    duplicate = StudyFactory(seed=7)
    assert duplicate.sha256 == original.sha256
    ReviewFactory(study=original)
    ReviewFactory(study=duplicate)
    assert list(snapshot_create().items.values_list("study_id", flat=True)) == [original.id]
