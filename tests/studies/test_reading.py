"""Multi-reader reading: final label rules, rejection, send back, assignment, queue, blinding."""

import pytest
from django.core.exceptions import ValidationError

from studies.models import Review, Study
from studies.selectors import (
    adjudication_queue_list,
    model_overruled_rates,
    review_queue_list,
    study_blinding,
    study_list,
)
from studies.services import (
    review_adjudicate,
    review_submit,
    study_assign,
    study_reject,
    study_send_back,
)
from tests.factories import PredictionFactory, UserFactory, reviewer, site_lead

pytestmark = pytest.mark.django_db


def _study(**fields) -> Study:
    return PredictionFactory(**{f"study__{k}": v for k, v in fields.items()}).study


def test_one_required_read_makes_the_latest_read_final(settings):
    settings.REVIEW_READS_REQUIRED = 1
    study = _study()
    review_submit(study=study, reviewer=reviewer(), label="covid")
    review_submit(study=study, reviewer=reviewer(), label="normal")

    study.refresh_from_db()
    assert (study.reading_state, study.label_final, study.label_rule) == ("final", "normal", "single_read")


def test_two_agreeing_readers_give_a_unanimous_final_label(settings):
    settings.REVIEW_READS_REQUIRED = 2
    study = _study()
    review_submit(study=study, reviewer=reviewer(), label="covid")
    study.refresh_from_db()
    assert study.reading_state == "reading" and study.label_final == ""

    review_submit(study=study, reviewer=reviewer(), label="covid")
    study.refresh_from_db()
    assert (study.reading_state, study.label_final, study.label_rule) == ("final", "covid", "unanimous")


def test_disagreeing_readers_send_the_study_to_adjudication_which_sets_the_label(settings):
    settings.REVIEW_READS_REQUIRED_BY_SOURCE = {"site-b": 2}
    study = _study(source="site-b")
    review_submit(study=study, reviewer=reviewer(site_name="site-b"), label="covid")
    review_submit(study=study, reviewer=reviewer(site_name="site-b"), label="normal")
    judge = reviewer(site_name="site-b", groups=["adjudicator"])  # a reviewer there, in the adjudicator group

    assert list(adjudication_queue_list(user=judge)) == [study]
    review_adjudicate(study=study, adjudicator=judge, label="pneumonia", reason="Right lower lobe consolidation.")

    study.refresh_from_db()
    assert (study.reading_state, study.label_final, study.label_rule) == ("final", "pneumonia", "adjudicated")
    assert list(adjudication_queue_list(user=judge)) == []


def test_a_site_set_in_the_admin_to_three_reads_needs_three_whatever_the_deployment_says(settings, api_client):
    settings.REVIEW_READS_REQUIRED = 1
    settings.REVIEW_READS_REQUIRED_BY_SOURCE = {"site-c": 2}
    study = _study(source="site-c")
    study.site.reads_required = 3
    study.site.save()
    for label in ("covid", "covid"):
        review_submit(study=study, reviewer=reviewer(site_name="site-c"), label=label)
    study.refresh_from_db()
    assert study.reading_state == "reading" and study.label_final == ""

    api_client.force_authenticate(site_lead(site_name="site-c"))
    assert api_client.get(f"/api/studies/{study.pk}/").json()["reads_required"] == 3
    review_submit(study=study, reviewer=reviewer(site_name="site-c"), label="covid")
    study.refresh_from_db()
    assert (study.reading_state, study.label_final, study.label_rule) == ("final", "covid", "unanimous")


def test_adjudication_needs_the_role_a_reason_and_a_disagreement():
    study = _study()
    judge = site_lead()
    with pytest.raises(ValidationError, match="Only adjudicators"):
        review_adjudicate(study=study, adjudicator=reviewer(), label="covid", reason="x")
    with pytest.raises(ValidationError, match="Only adjudicators"):  # the group alone, without a review role
        review_adjudicate(study=study, adjudicator=UserFactory(groups=["adjudicator"]), label="covid", reason="x")
    with pytest.raises(ValidationError, match="who review studies of test-site"):  # a lead of another site
        review_adjudicate(study=study, adjudicator=site_lead(site_name="site-b"), label="covid", reason="x")
    with pytest.raises(ValidationError, match="Say why"):
        review_adjudicate(study=study, adjudicator=judge, label="covid", reason=" ")
    with pytest.raises(ValidationError, match="readers disagree"):
        review_adjudicate(study=study, adjudicator=judge, label="covid", reason="x")
    assert not Review.objects.exists()


def test_rejected_studies_never_enter_a_dataset_and_leave_the_queue():
    reader = reviewer()
    study = _study()
    review_submit(study=study, reviewer=reader, label="covid")
    study_reject(study=study, reviewer=reader, reason="identifiers_visible", comment="Name in the corner")

    study.refresh_from_db()
    assert study.reading_state == "rejected" and study.label_final == ""
    assert list(study_list(user=reader, filters={"reviewed": True})) == []
    assert list(review_queue_list(user=reviewer())) == []
    with pytest.raises(ValidationError, match="rejected"):
        review_submit(study=study, reviewer=reader, label="covid")


def test_a_snapshot_leaves_out_rejected_studies(django_user_model):
    from training.services import snapshot_create

    reader = reviewer()
    kept, rejected = _study(), _study()
    review_submit(study=kept, reviewer=reader, label="covid")
    review_submit(study=rejected, reviewer=reader, label="covid")
    study_reject(study=rejected, reviewer=reader, reason="not_chest_xray")

    snapshot = snapshot_create(user=None)
    assert [item.study_id for item in snapshot.items.all()] == [kept.pk]


def test_unknown_reject_reason_is_refused():
    with pytest.raises(ValidationError, match="Unknown reason"):
        study_reject(study=_study(), reviewer=reviewer(), reason="boring")


def test_sending_back_starts_a_new_round_that_needs_reading_again():
    reader = reviewer()
    study = _study()
    review_submit(study=study, reviewer=reader, label="covid")
    study_send_back(study=study, user=reader)

    study.refresh_from_db()
    assert (study.reading_state, study.reading_round, study.label_final) == ("unread", 2, "")
    assert list(review_queue_list(user=reader)) == [study]


def test_assigned_studies_are_only_in_their_reviewers_queue():
    ann, bob = reviewer(username="ann"), reviewer(username="bob")
    mine, shared = _study(), _study()
    study_assign(study=mine, user=site_lead(), reviewer_username="ann")

    assert set(review_queue_list(user=ann)) == {mine, shared}
    assert list(review_queue_list(user=ann, mine=True)) == [mine]
    assert list(review_queue_list(user=bob)) == [shared]
    with pytest.raises(ValidationError, match="not a reviewer"):
        study_assign(study=mine, user=site_lead(), reviewer_username="nobody")


def _predicted(label: str, probabilities: dict[str, float], entropy: float) -> Study:
    return PredictionFactory(label=label, probabilities=probabilities, entropy=entropy).study


SURE_COVID = ("covid", {"covid": 0.98, "normal": 0.01, "pneumonia": 0.01}, 0.11)
UNSURE_NORMAL = ("normal", {"covid": 0.3, "normal": 0.4, "pneumonia": 0.3}, 1.09)


def test_queue_orders_by_uncertainty_age_or_the_answers_readers_overrule_most():
    """Readers overruled 3 of the site's 3 covid answers ((3+1)/(3+2) = 0.8) and none of its 3 normal answers
    (1/5 = 0.2): the confident covid answer comes first by disagreement, last by uncertainty."""
    past = reviewer()
    for label, read in (("covid", "normal"), ("normal", "normal")):
        for _ in range(3):
            review_submit(study=PredictionFactory(label=label).study, reviewer=past, label=read)
    sure, unsure = _predicted(*SURE_COVID), _predicted(*UNSURE_NORMAL)
    me = reviewer()

    assert model_overruled_rates(user=me) == {("test-site", "covid"): 0.8, ("test-site", "normal"): 0.2}
    assert list(review_queue_list(user=me, order="uncertainty")) == [unsure, sure]
    assert list(review_queue_list(user=me, order="age")) == [sure, unsure]
    assert list(review_queue_list(user=me, order="disagreement")) == [sure, unsure]
    assert list(review_queue_list(user=me, source="elsewhere")) == []
    assert list(review_queue_list(user=me, predicted_label="normal")) == [unsure]


def test_disagreement_order_tells_a_reader_nothing_blinding_hides(settings):
    """Another reader contradicting the model moves a study up only for an adjudicator, who sees the reads; on a
    blinded source the answers' overruled rates do not sort the studies (that would sort them by answer)."""
    settings.REVIEW_READS_REQUIRED = 2
    sure, unsure = _predicted(*SURE_COVID), _predicted(*UNSURE_NORMAL)
    review_submit(study=sure, reviewer=reviewer(), label="normal")  # a reader contradicted the model
    judge = reviewer(groups=["adjudicator"])

    assert list(review_queue_list(user=reviewer(), order="disagreement")) == [unsure, sure]
    assert list(review_queue_list(user=judge, order="disagreement")) == [sure, unsure]

    settings.REVIEW_READS_REQUIRED = 1
    settings.REVIEW_BLIND_TO_MODEL_SOURCES = ["test-site"]
    for _ in range(3):  # readers always overrule covid here
        review_submit(study=PredictionFactory(label="covid").study, reviewer=judge, label="normal")
    assert list(review_queue_list(user=reviewer(), order="disagreement")) == [unsure, sure]


def test_a_reader_is_blind_to_others_until_they_have_read(settings):
    settings.REVIEW_READS_REQUIRED = 2
    settings.REVIEW_BLIND_TO_MODEL_SOURCES = ["blind-site"]
    study = _study(source="blind-site")
    first, second = reviewer(site_name="blind-site"), reviewer(site_name="blind-site")
    review_submit(study=study, reviewer=first, label="covid")
    study = Study.objects.prefetch_related("reviews").get(pk=study.pk)

    assert study_blinding(user=second, study=study) == (True, True)
    assert study_blinding(user=first, study=study) == (False, False)
    assert study_blinding(user=site_lead(site_name="blind-site"), study=study) == (False, False)


def test_reading_time_is_kept_on_the_review():
    review = review_submit(study=_study(), reviewer=reviewer(), label="covid", reading_ms=4200)
    assert Review.objects.get(pk=review.pk).reading_ms == 4200
