"""The promotion gate (training/gate.py): paired, per source, at the deployed decision rule."""

import numpy as np
import pytest

from training.gate import FIRST_VERSION, CaseSet, GateDecision, GatePolicy, gate_decide

CLASSES = ("covid", "normal", "pneumonia")
POLICY = GatePolicy(bootstrap_rounds=500)


def two_sites(
    *, site_b_fixed: bool = False, site_a_broken: bool = False, covid_lost: int = 0
) -> tuple[CaseSet, CaseSet]:
    """Site A (60 patients, covid/normal/pneumonia) both models read well; site B (20 adults,
    covid and normal) the active model calls all COVID. The candidate may fix B, break A, or miss
    COVID cases on A."""
    y_a = np.array([0, 1, 2] * 20)
    y_b = np.array([0, 1] * 10)
    y = np.r_[y_a, y_b]
    active = np.r_[y_a, np.zeros(20, dtype=int)]
    candidate = active.copy()
    if site_b_fixed:
        candidate[60:] = y_b
    if site_a_broken:
        candidate[:60][y_a == 1] = 2  # every normal on site A called pneumonia
    if covid_lost:
        covid_on_a = np.flatnonzero(y_a == 0)[:covid_lost]
        candidate[covid_on_a] = 1
    common = {
        "class_names": CLASSES,
        "study_ids": range(80),
        "patients": [f"p{i}" for i in range(80)],
        "sources": ["site-a"] * 60 + ["site-b"] * 20,
        "y_true": y,
    }
    return CaseSet.build(**common, decided=candidate), CaseSet.build(**common, decided=active)


def rows(decision: GateDecision, scope: str) -> dict[str, str]:
    return {row.metric: row.verdict for row in decision.comparisons if row.scope == scope}


def test_a_candidate_that_fixes_the_new_site_is_promoted_as_better_there():
    candidate, active = two_sites(site_b_fixed=True)
    decision = gate_decide(candidate=candidate, active=active, policy=POLICY)
    assert decision.promote
    assert rows(decision, "site-b")["balanced_accuracy"] == "better"
    assert rows(decision, "site-b")["sensitivity:normal"] == "better"
    assert rows(decision, "site-a") == {
        "balanced_accuracy": "non-inferior",
        "sensitivity:covid": "non-inferior",
        "sensitivity:normal": "non-inferior",
        "sensitivity:pneumonia": "non-inferior",
    }
    assert decision.reason.startswith("Better: ") and "site-b" in decision.reason


def test_a_candidate_that_fixes_the_new_site_but_breaks_the_old_one_is_refused():
    candidate, active = two_sites(site_b_fixed=True, site_a_broken=True)
    decision = gate_decide(candidate=candidate, active=active, policy=POLICY)
    assert not decision.promote
    assert rows(decision, "site-a")["sensitivity:normal"] == "worse"
    assert "Not shown non-inferior" in decision.reason and "site-a" in decision.reason


def test_losing_covid_cases_on_an_old_site_is_refused_even_when_the_new_site_improves():
    candidate, active = two_sites(site_b_fixed=True, covid_lost=3)
    decision = gate_decide(candidate=candidate, active=active, policy=POLICY)
    assert not decision.promote
    assert rows(decision, "site-a")["sensitivity:covid"] in ("worse", "inconclusive")


def test_a_non_inferior_tie_goes_to_the_candidate_unless_the_policy_says_otherwise():
    candidate, active = two_sites()
    decision = gate_decide(candidate=candidate, active=active, policy=POLICY)
    assert decision.promote and "tie goes to the candidate" in decision.reason
    strict = GatePolicy(bootstrap_rounds=200, promote_ties=False)
    assert not gate_decide(candidate=candidate, active=active, policy=strict).promote


def test_a_source_with_few_test_patients_is_shown_but_not_judged_on_its_own():
    candidate, active = two_sites(site_b_fixed=True)
    decision = gate_decide(candidate=candidate, active=active, policy=GatePolicy(min_source_patients=30))
    assert set(rows(decision, "site-b").values()) == {"not judged"}
    assert decision.promote  # the fix still shows overall
    assert rows(decision, "overall")["balanced_accuracy"] == "better"


def test_differences_are_paired_with_intervals_around_the_point_estimate():
    candidate, active = two_sites(site_b_fixed=True)
    decision = gate_decide(candidate=candidate, active=active, policy=POLICY)
    row = next(r for r in decision.comparisons if (r.scope, r.metric) == ("site-b", "sensitivity:normal"))
    assert (row.active, row.candidate, row.difference) == (0.0, 1.0, 1.0)
    assert row.low == row.high == 1.0  # every resample holds only fixed normals: no variance
    assert row.patients == 20 and row.cases == 20
    unchanged = next(r for r in decision.comparisons if (r.scope, r.metric) == ("site-a", "balanced_accuracy"))
    assert unchanged.difference == unchanged.low == unchanged.high == 0.0


def test_the_first_version_is_promoted_and_a_decision_survives_json():
    candidate, active = two_sites(site_b_fixed=True)
    assert gate_decide(candidate=candidate, active=None, policy=POLICY) == GateDecision(True, FIRST_VERSION)
    decision = gate_decide(candidate=candidate, active=active, policy=POLICY)
    assert GateDecision.from_dict(decision.as_dict()) == decision


def test_models_scored_on_different_cases_cannot_be_compared():
    candidate, _ = two_sites()
    other = CaseSet.build(class_names=CLASSES, study_ids=[1], patients=["x"], sources=["s"], y_true=[0], decided=[0])
    with pytest.raises(ValueError, match="same test cases"):
        gate_decide(candidate=candidate, active=other, policy=POLICY)


def test_a_few_swapped_cases_of_a_class_not_required_do_not_refuse_on_their_own():
    """One normal called pneumonia and one pneumonia called normal among 100 each: the normal
    sensitivity's interval reaches past the margin, balanced accuracy's does not. By default only
    balanced accuracy and COVID sensitivity must be non-inferior."""
    y = np.array([0, 1, 2] * 100)
    active = y.copy()
    candidate = y.copy()
    candidate[np.flatnonzero(y == 1)[0]] = 2
    candidate[np.flatnonzero(y == 2)[0]] = 1
    common = {
        "class_names": CLASSES,
        "study_ids": range(300),
        "patients": [f"p{i}" for i in range(300)],
        "sources": ["site-a"] * 300,
        "y_true": y,
    }
    cand, act = CaseSet.build(**common, decided=candidate), CaseSet.build(**common, decided=active)
    decision = gate_decide(candidate=cand, active=act, policy=POLICY)
    assert rows(decision, "overall")["sensitivity:normal"] == "inconclusive"
    assert rows(decision, "overall")["balanced_accuracy"] == "non-inferior"
    assert decision.promote
    strict = GatePolicy(bootstrap_rounds=200, required_sensitivities=("covid", "normal"))
    assert not gate_decide(candidate=cand, active=act, policy=strict).promote


@pytest.mark.parametrize("patients, promote", [(1, False), (9, False), (10, True)])
def test_a_test_split_of_too_few_patients_judges_nothing(patients, promote):
    """One patient drawn every time gave a zero-width interval: one case made a model "better"."""
    y = np.array([0, 1, 2] * 4)[: max(patients, 3)]
    common = {
        "class_names": CLASSES,
        "study_ids": range(len(y)),
        "patients": [f"p{i % patients}" for i in range(len(y))],
        "sources": ["site-a"] * len(y),
        "y_true": y,
    }
    active = CaseSet.build(**common, decided=np.zeros(len(y), dtype=int))
    candidate = CaseSet.build(**common, decided=y)  # right on every case
    decision = gate_decide(candidate=candidate, active=active, policy=POLICY)
    assert decision.promote is promote
    if not promote:
        assert decision.comparisons == () and f"holds {patients} patient(s); at least 10" in decision.reason


def test_the_same_patient_key_at_two_sites_is_two_patients():
    y = np.array([0, 1] * 10)
    common = {
        "class_names": CLASSES,
        "study_ids": range(20),
        "patients": [f"p{i % 10}" for i in range(20)],  # p0..p9 at each site
        "sources": ["site-a"] * 10 + ["site-b"] * 10,
        "y_true": y,
    }
    decision = gate_decide(
        candidate=CaseSet.build(**common, decided=y), active=CaseSet.build(**common, decided=y), policy=POLICY
    )
    assert {row.patients for row in decision.comparisons if row.scope == "overall"} == {20}
