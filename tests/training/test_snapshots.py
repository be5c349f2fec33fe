"""Curated dataset snapshots and patient-level, frozen splits."""

import pytest

from studies.models import Patient
from tests.factories import PatientFactory, ReviewFactory, StudyFactory
from training.models import SnapshotItem
from training.services import snapshot_create
from training.services.snapshots import split_for_patient


def test_a_patient_key_always_maps_to_the_same_split():
    splits = {split_for_patient(f"site:{i}", val_fraction=0.15, test_fraction=0.2) for i in range(3)}
    again = {split_for_patient(f"site:{i}", val_fraction=0.15, test_fraction=0.2) for i in range(3)}
    assert splits == again


def test_split_fractions_are_roughly_respected():
    splits = [split_for_patient(f"p{i}", val_fraction=0.15, test_fraction=0.2) for i in range(4000)]
    assert splits.count("test") / 4000 == pytest.approx(0.2, abs=0.03)
    assert splits.count("val") / 4000 == pytest.approx(0.15, abs=0.03)


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
