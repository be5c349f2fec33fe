"""Agreement figures against a fixture computed by hand (and sklearn's Cohen's kappa).

Three readers, six studies (c = covid, n = normal, p = pneumonia):

    study   ann  bob  cid   final (adjudicated where they disagree)  model
    1       c    c    c     c                                        c
    2       n    n    n     n                                        n
    3       p    p    n     p                                        p
    4       c    n    c     c                                        n
    5       n    n    n     n                                        n
    6       p    p    p     p                                        c

Cohen ann-bob: p_o = 5/6; ann (2,2,2)/6, bob (1,3,2)/6: p_e = (2+6+4)/36 = 1/3; kappa = 0.75.
Cohen ann-cid: p_o = 5/6; cid (2,3,1)/6: p_e = (4+6+2)/36 = 1/3; kappa = 0.75.
Cohen bob-cid: p_o = 4/6; p_e = (2+9+2)/36 = 13/36; kappa = (24-13)/(36-13) = 11/23.
Fleiss: per-study P_i = 1, 1, 1/3, 1/3, 1, 1 -> P = 7/9; category shares 5/18, 8/18, 5/18 ->
P_e = 114/324 = 19/54; kappa = (7/9 - 19/54)/(1 - 19/54) = 23/35.
ann vs final: 6/6, kappa 1. bob vs model: c,n,p,n,n,p vs c,n,p,n,n,c: 5/6 agree. All six are of one site
and one week, so the per-source and per-week figures are these too.
"""

import pytest
from sklearn.metrics import cohen_kappa_score

from studies.agreement import agreement_stats, cohen_kappa, fleiss_kappa
from studies.services import review_adjudicate, review_submit
from tests.factories import PredictionFactory, reviewer, site_lead

# Columns are studies 1..6 (see the module docstring); rows as read.
READS = {"ann": "cnpcnp", "bob": "cnpnnp", "cid": "cnncnp"}
FINAL = "cnpcnp"
MODEL = "cnpnnc"
NAMES = {"c": "covid", "n": "normal", "p": "pneumonia"}


def _labels(codes: str) -> list[str]:
    return [NAMES[c] for c in codes]


def test_cohen_kappa_matches_the_hand_computed_values_and_sklearn():
    for (a, b), expected in {("ann", "bob"): 0.75, ("ann", "cid"): 0.75, ("bob", "cid"): 11 / 23}.items():
        x, y = _labels(READS[a]), _labels(READS[b])
        assert cohen_kappa(x, y) == pytest.approx(expected)
        assert cohen_kappa(x, y) == pytest.approx(cohen_kappa_score(x, y))


def test_fleiss_kappa_matches_the_hand_computed_value():
    items = [[NAMES[READS[r][i]] for r in READS] for i in range(6)]
    assert fleiss_kappa(items) == pytest.approx(23 / 35)


def test_kappas_are_undefined_without_data_and_one_for_perfect_single_category_agreement():
    assert cohen_kappa([], []) is None
    assert fleiss_kappa([["covid"]]) is None
    assert cohen_kappa(["covid"] * 3, ["covid"] * 3) == 1.0


@pytest.mark.django_db
def test_stats_api_reports_the_fixture_agreement_per_pair_reader_and_source(settings, api_client):
    settings.REVIEW_READS_REQUIRED = 3
    readers = {name: reviewer(username=name, site_name="site-a") for name in READS}
    judge = reviewer(username="judge", site_name="site-a", groups=["adjudicator"])
    for i in range(6):
        label = NAMES[MODEL[i]]
        study = PredictionFactory(
            label=label, probabilities={**dict.fromkeys(NAMES.values(), 0.1), label: 0.8}, study__source="site-a"
        ).study
        for name, user in readers.items():
            review_submit(study=study, reviewer=user, label=NAMES[READS[name][i]])
        study.refresh_from_db()
        if study.reading_state == "disagreement":
            review_adjudicate(study=study, adjudicator=judge, label=NAMES[FINAL[i]], reason="fixture")
    api_client.force_authenticate(judge)

    response = api_client.get("/api/stats/")

    assert response.status_code == 200
    agreement = response.json()["agreement"]
    pairs = {tuple(p["readers"]): p["kappa"] for p in agreement["pairs"]}
    assert pairs == {("ann", "bob"): 0.75, ("ann", "cid"): 0.75, ("bob", "cid"): round(11 / 23, 4)}
    assert agreement["fleiss"] == {"kappa": round(23 / 35, 4), "n": 6}
    per_reader = {r["reader"]: r for r in agreement["per_reader"]}
    assert per_reader["ann"]["vs_final"] == {"n": 6, "agreement": 1.0, "kappa": 1.0}
    assert per_reader["bob"]["vs_model"]["agreement"] == round(5 / 6, 4)
    assert per_reader["bob"]["vs_model"]["kappa"] == round(cohen_kappa_score(_labels(READS["bob"]), _labels(MODEL)), 4)
    assert agreement["by_source"]["site-a"]["fleiss"]["kappa"] == round(23 / 35, 4)
    (week,) = agreement["by_week"]  # the six studies were uploaded this week
    assert (week["n"], week["fleiss"]) == (6, round(23 / 35, 4))
    weekly = {r["reader"]: r for r in week["per_reader"]}
    assert weekly["ann"]["vs_final"] == {"n": 6, "agreement": 1.0, "kappa": 1.0}
    assert weekly["bob"]["vs_model"]["agreement"] == round(5 / 6, 4)
    by_source = {r["reader"]: r for r in agreement["by_source"]["site-a"]["per_reader"]}
    assert by_source["bob"]["vs_model"] == per_reader["bob"]["vs_model"]
    assert response.json()["labels_by_source"] == {"site-a": {"covid": 2, "normal": 2, "pneumonia": 2}}

    api_client.force_authenticate(site_lead(username="elsewhere", site_name="site-b"))  # sees no site-a study
    other = api_client.get("/api/stats/").json()
    assert other["agreement"]["pairs"] == [] and other["agreement"]["by_source"] == {}
    assert other["labels_by_source"] == {} and other["backlog"]["unread"] == 0 and other["studies_per_day"] == []


@pytest.mark.django_db
def test_agreement_counts_each_readers_latest_read_of_the_current_round_only(settings):
    settings.REVIEW_READS_REQUIRED = 2
    ann, bob = reviewer(username="ann"), reviewer(username="bob")
    study = PredictionFactory().study
    review_submit(study=study, reviewer=ann, label="normal")
    review_submit(study=study, reviewer=ann, label="covid")  # ann changes her mind
    review_submit(study=study, reviewer=bob, label="covid")

    assert agreement_stats()["pairs"] == [{"readers": ["ann", "bob"], "n": 1, "kappa": 1.0}]
