import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from training.evaluation import (
    evaluate_predictions,
    expected_calibration_error,
    fit_decision_rule,
    shortcut_check,
    stratum_weights,
)
from training.plots import plot_confusion_matrix, plot_reliability, plot_roc, plot_training_curves

CLASSES = ["covid", "normal", "pneumonia"]


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _noisy_probs(y: np.ndarray, rng: np.random.Generator, signal: float = 2.0) -> np.ndarray:
    logits = rng.normal(size=(len(y), len(CLASSES)))
    logits[np.arange(len(y)), y] += signal
    return _softmax(logits)


def _evaluate(y, probs, *, patients=None, sources=None, class_names=CLASSES, **kwargs) -> dict:
    n = len(y)
    return evaluate_predictions(
        y_true=np.asarray(y),
        probs=np.asarray(probs, dtype=float),
        class_names=class_names,
        patients=patients or [f"patient-{i}" for i in range(n)],
        sources=sources or ["hospital"] * n,
        **kwargs,
    )


def _three_sources(per_class: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Every source holds every class, `per_class` images each."""
    y = np.tile(np.repeat(np.arange(len(CLASSES)), per_class), 3)
    sources = np.repeat(["a", "b", "c"], per_class * len(CLASSES))
    return y, sources


def _assert_plain_json(value) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            _assert_plain_json(item)
    elif isinstance(value, list):
        for item in value:
            _assert_plain_json(item)
    else:
        assert value is None or type(value) in (str, int, float, bool), type(value)


def test_perfect_classifier_scores_sensitivity_and_auc_of_one():
    y = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2])
    result = _evaluate(y, np.eye(3)[y] * 0.9 + 0.1 / 3)

    assert result["accuracy"] == 1.0
    assert result["macro_auc"] == 1.0
    assert result["covid_sensitivity_at_95_specificity"] == 1.0
    assert result["confusion_matrix"] == [[3, 0, 0], [0, 3, 0], [0, 0, 3]]
    for name in CLASSES:
        assert result["per_class"][name] == {
            "support": 3,
            "sensitivity": 1.0,
            "specificity": 1.0,
            "ppv": 1.0,
            "npv": 1.0,
            "auc": 1.0,
        }


def test_auc_and_covid_sensitivity_match_scikit_learn_with_tied_scores():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    probs = _noisy_probs(y, rng, signal=1.0).round(1)

    result = _evaluate(y, probs)

    for c, name in enumerate(CLASSES):
        assert result["per_class"][name]["auc"] == pytest.approx(roc_auc_score(y == c, probs[:, c]))
    fpr, tpr, _ = roc_curve(y == 0, probs[:, 0], drop_intermediate=False)
    assert result["covid_sensitivity_at_95_specificity"] == pytest.approx(tpr[fpr <= 0.05].max())


def test_undefined_metrics_are_none_and_result_is_plain_json():
    y = np.array([0, 0, 1, 1])
    result = _evaluate(y, np.eye(3)[[0, 1, 1, 1]])

    _assert_plain_json(result)
    json.dumps(result, allow_nan=False)
    assert result["per_class"]["pneumonia"]["sensitivity"] is None
    assert result["per_class"]["pneumonia"]["auc"] is None
    assert result["per_class"]["pneumonia"]["ppv"] is None
    assert result["ci"]["per_class"]["pneumonia"]["sensitivity"] == [None, None]
    assert result["roc"]["pneumonia"] == {"fpr": [], "tpr": []}


def test_bootstrap_resamples_patients_not_images():
    # One patient's ten images are all right, the other's all wrong: drawing patients gives accuracy 0, 0.5 or 1.
    y = np.zeros(20, dtype=int)
    probs = np.eye(3)[[0] * 10 + [1] * 10]
    patients = ["right"] * 10 + ["wrong"] * 10

    by_patient = _evaluate(y, probs, patients=patients)["ci"]["accuracy"]
    as_if_independent = _evaluate(y, probs)["ci"]["accuracy"]

    assert by_patient == [0.0, 1.0]
    assert 0.2 < as_if_independent[0] < as_if_independent[1] < 0.8


def test_bootstrap_intervals_are_reproducible_for_a_seed():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 100)
    probs = _noisy_probs(y, rng)

    assert _evaluate(y, probs, seed=7)["ci"] == _evaluate(y, probs, seed=7)["ci"]


def test_confidence_interval_contains_the_point_estimate():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    result = _evaluate(y, _noisy_probs(y, rng, signal=1.0))

    low, high = result["ci"]["macro_auc"]
    assert low < result["macro_auc"] < high
    low, high = result["ci"]["per_class"]["covid"]["sensitivity"]
    assert low < result["per_class"]["covid"]["sensitivity"] < high


def test_per_source_auc_is_none_for_single_class_source():
    y = np.array([0, 0, 0, 1, 2, 1, 2])
    sources = ["hannover"] * 3 + ["kaggle-pediatric"] * 4
    result = _evaluate(y, np.eye(3)[y], sources=sources)

    assert result["per_source"]["hannover"]["macro_auc"] is None
    assert result["per_source"]["hannover"]["classes_present"] == ["covid"]
    assert result["per_source"]["kaggle-pediatric"]["macro_auc"] == 1.0
    assert result["per_source"]["kaggle-pediatric"]["classes_present"] == ["normal", "pneumonia"]


def test_per_source_metrics_count_only_that_sources_images():
    y = np.array([1, 2, 1, 2])
    probs = np.eye(3)[[1, 2, 2, 1]]
    result = _evaluate(y, probs, sources=["good", "good", "bad", "bad"])

    assert result["per_source"]["good"]["accuracy"] == 1.0
    assert result["per_source"]["bad"]["accuracy"] == 0.0
    assert result["per_source"]["bad"]["n"] == 2
    assert result["per_source"]["bad"]["per_class"]["normal"] == {"support": 1, "sensitivity": 0.0, "specificity": 0.0}


def test_covid_sensitivity_is_none_without_a_covid_class():
    y = np.array([0, 1, 0, 1])
    result = _evaluate(y, np.eye(2)[y], class_names=["normal", "pneumonia"])

    assert result["covid_sensitivity_at_95_specificity"] is None
    assert result["ci"]["covid_sensitivity_at_95_specificity"] == [None, None]


def test_roc_curves_are_downsampled_to_at_most_100_points():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 1000)
    result = _evaluate(y, _noisy_probs(y, rng, signal=0.5), bootstrap_rounds=10)

    for curve in result["roc"].values():
        assert 2 < len(curve["fpr"]) == len(curve["tpr"]) <= 100
        assert (curve["fpr"][0], curve["tpr"][0], curve["fpr"][-1], curve["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)


def test_reliability_bins_cover_every_image_and_give_the_reported_ece():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 200)
    probs = _noisy_probs(y, rng)
    calibration = _evaluate(y, probs)["calibration"]

    assert sum(calibration["reliability"]["bin_count"]) == 200
    assert calibration["ece"] == pytest.approx(expected_calibration_error(probs=probs, y_true=y))


def test_ece_is_zero_when_confidence_equals_accuracy():
    y = np.array([0, 0, 0, 1])
    probs = np.tile([0.75, 0.25, 0.0], (4, 1))

    assert expected_calibration_error(probs=probs, y_true=y) == pytest.approx(0.0)


def test_the_fitted_decision_rule_undoes_overconfidence_and_lowers_ece():
    rng = np.random.default_rng(6)
    logits = rng.normal(scale=1.5, size=(4000, 3))
    y = (rng.random((4000, 1)) > np.cumsum(_softmax(logits), axis=1)).sum(axis=1)
    overconfident = _softmax(3 * logits)
    val, test = slice(0, 2000), slice(2000, None)

    rule = fit_decision_rule(probs=overconfident[val], y_true=y[val], sources=["a"] * 2000)
    calibrated = rule.adjust(overconfident[test])

    assert rule.temperature == pytest.approx(3.0, rel=0.2)
    before = expected_calibration_error(probs=overconfident[test], y_true=y[test])
    assert expected_calibration_error(probs=calibrated, y_true=y[test]) < before / 2


def test_a_site_whose_normals_look_like_covid_gets_its_own_bias_that_fixes_its_decisions():
    """The model ranks site B's images well but shifts them all towards COVID: a prior correction
    fitted on B's validation cases makes B's normals normal again, and leaves site A alone."""
    rng = np.random.default_rng(3)

    def outputs(y: np.ndarray, shift: float) -> np.ndarray:
        logits = rng.normal(scale=0.5, size=(len(y), 3)) + 3.0 * np.eye(3)[y]
        logits[:, 0] += shift
        return _softmax(logits)

    y_a, y_b = np.arange(300) % 3, np.arange(12) % 2  # site B: covid and normal only
    probs = np.r_[outputs(y_a, 0.0), outputs(y_b, 4.0)]
    sources = ["a"] * 300 + ["b"] * 12
    rule = fit_decision_rule(probs=probs, y_true=np.r_[y_a, y_b], sources=sources, min_site_cases=8)

    assert set(rule.site_bias) == {"a", "b"}
    new_b = np.arange(40) % 2
    b_probs = outputs(new_b, 4.0)
    assert (b_probs.argmax(1) == new_b).mean() <= 0.65  # raw: most normals called COVID
    assert (rule.adjust(b_probs, ["b"] * 40).argmax(1) == new_b).mean() >= 0.95
    a_probs = outputs(y_a, 0.0)
    assert (rule.adjust(a_probs, ["a"] * 300).argmax(1) == y_a).mean() >= 0.95
    unseen = rule.adjust(b_probs, ["never-seen"] * 40)  # other sites get the global bias
    assert np.allclose(unseen, rule.adjust(b_probs))


def test_a_site_with_too_few_validation_cases_keeps_the_global_bias():
    probs = _softmax(np.random.default_rng(0).normal(size=(20, 3)))
    rule = fit_decision_rule(probs=probs, y_true=np.arange(20) % 3, sources=["a"] * 17 + ["b"] * 3, min_site_cases=4)
    assert set(rule.site_bias) == {"a"}


def test_the_decision_rule_is_the_identity_for_fewer_than_two_samples():
    rule = fit_decision_rule(probs=np.array([[0.9, 0.1]]), y_true=np.array([0]), sources=["a"])
    assert rule.temperature == 1.0 and rule.bias == () and rule.site_bias == {}


def test_stratum_weights_give_every_source_and_class_the_same_total():
    y = np.array([0] * 90 + [1] * 10 + [0] * 4)
    sources = ["big"] * 100 + ["new"] * 4
    weights = stratum_weights(y_true=y, sources=sources)
    assert weights.mean() == pytest.approx(1.0)
    totals = [weights[:90].sum(), weights[90:100].sum(), weights[100:].sum()]
    assert totals == pytest.approx([totals[0]] * 3)
    half = stratum_weights(y_true=y, sources=sources, power=0.5)
    assert half[100] / half[0] == pytest.approx((90 / 4) ** 0.5)
    assert np.allclose(stratum_weights(y_true=y, sources=sources, power=0.0), 1.0)


def test_shortcut_warning_when_source_predictable_but_class_is_not():
    rng = np.random.default_rng(7)
    y, sources = _three_sources()
    embeddings = 3 * (sources[:, None] == np.array(["a", "b", "c"])) + rng.normal(size=(len(y), 3))

    check = shortcut_check(metrics={}, embeddings=embeddings, y_true=y, sources=sources, class_names=CLASSES)

    assert check["warning"] is True
    assert check["source_probe_balanced_accuracy"] >= 0.9
    assert check["class_probe_balanced_accuracy_within_source"] < 0.6
    assert len(check["reasons"]) == 1
    assert check["reasons"][0].startswith("the model's features identify the source (")


def test_no_warning_for_model_that_separates_classes_within_sources():
    rng = np.random.default_rng(8)
    y, sources = _three_sources()
    embeddings = np.hstack([3 * np.eye(3)[y], 3 * (sources[:, None] == np.array(["a", "b", "c"]))])
    embeddings += rng.normal(size=embeddings.shape)
    metrics = _evaluate(y, _noisy_probs(y, rng), sources=list(sources), bootstrap_rounds=10)

    check = shortcut_check(metrics=metrics, embeddings=embeddings, y_true=y, sources=sources, class_names=CLASSES)

    assert check == {
        "warning": False,
        "reasons": [],
        "source_probe_balanced_accuracy": pytest.approx(1.0, abs=0.1),
        "class_probe_balanced_accuracy_within_source": pytest.approx(1.0, abs=0.1),
        "within_source_macro_auc": pytest.approx(metrics["macro_auc"], abs=0.1),
    }


def test_shortcut_warning_when_auc_collapses_within_sources():
    y, sources = _three_sources()
    metrics = {
        "macro_auc": 0.95,
        "per_source": {source: {"n": 60, "macro_auc": 0.6} for source in ("a", "b", "c")},
    }

    check = shortcut_check(metrics=metrics, embeddings=None, y_true=y, sources=sources, class_names=CLASSES)

    assert check["warning"] is True
    assert check["within_source_macro_auc"] == pytest.approx(0.6)
    assert check["reasons"] == [
        "macro AUC is 0.95 overall but only 0.60 on average within single sources: "
        "the overall figure rests on differences between sources"
    ]


def test_shortcut_warning_when_no_source_contains_more_than_one_class():
    y = np.repeat([0, 1, 2], 20)
    sources = np.repeat(["hannover", "kaggle-pediatric", "cohen-early"], 20)

    check = shortcut_check(metrics={}, embeddings=None, y_true=y, sources=sources, class_names=CLASSES)

    assert check["warning"] is True
    assert check["reasons"] == [
        "no source contains more than one class; the model cannot be shown to separate classes within a hospital"
    ]


def test_shortcut_warning_names_a_class_that_never_shares_a_source():
    # The development set's layout: COVID from adult hospitals, normal and pneumonia from a children's hospital.
    y = np.repeat([0, 1, 2], 20)
    sources = np.repeat(["hannover", "kaggle-pediatric", "kaggle-pediatric"], 20)

    check = shortcut_check(metrics={}, embeddings=None, y_true=y, sources=sources, class_names=CLASSES)

    assert check["warning"] is True
    assert check["reasons"] == [
        "class covid never has 5+ images in a source that also holds 5+ images of another class; "
        "the model cannot be shown to separate it from the other classes within a hospital"
    ]


def test_shortcut_check_returns_none_values_for_tiny_inputs():
    y = np.array([0, 1, 1])
    metrics = _evaluate(y, np.eye(3)[y], bootstrap_rounds=5)

    check = shortcut_check(
        metrics=metrics, embeddings=np.ones((3, 4)), y_true=y, sources=["a"] * 3, class_names=CLASSES
    )

    assert check["source_probe_balanced_accuracy"] is None
    assert check["class_probe_balanced_accuracy_within_source"] is None
    assert check["within_source_macro_auc"] is None


@pytest.mark.parametrize("plot", ["training_curves", "confusion_matrix", "roc", "reliability"])
def test_plots_write_non_empty_png_files(tmp_path, plot):
    rng = np.random.default_rng(9)
    y = rng.integers(0, 3, 60)
    metrics = _evaluate(y, _noisy_probs(y, rng), bootstrap_rounds=5)
    path = tmp_path / f"{plot}.png"
    draw = {
        "training_curves": lambda: plot_training_curves(
            {"loss": [1.0, 0.7, 0.5], "val_loss": [1.1, 0.8, 0.7], "accuracy": [0.5, 0.7], "val_accuracy": [0.4, 0.6]},
            path,
        ),
        "confusion_matrix": lambda: plot_confusion_matrix(metrics["confusion_matrix"], CLASSES, path),
        "roc": lambda: plot_roc(metrics["roc"], path, aucs={c: metrics["per_class"][c]["auc"] for c in CLASSES}),
        "reliability": lambda: plot_reliability(metrics["calibration"], path),
    }[plot]

    draw()

    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert path.stat().st_size > 5000


def test_a_site_whose_validation_holds_one_class_keeps_the_global_bias():
    """Four validation normals say nothing about where a site's COVID boundary lies; fitted alone they
    would teach that site "never COVID"."""
    probs = _softmax(np.random.default_rng(1).normal(size=(40, 3)))
    y = np.r_[np.arange(36) % 3, [1, 1, 1, 1]]
    rule = fit_decision_rule(probs=probs, y_true=y, sources=["a"] * 36 + ["b"] * 4, min_site_cases=3)
    assert set(rule.site_bias) == {"a"}


def test_a_sites_own_bias_never_costs_a_protected_validation_case():
    """Site B's normals look like COVID and one of its COVID cases is scored below them: the
    likelihood-best prior correction for B calls that case normal and fixes no normal. With COVID
    protected, the site's bias moves only as far as keeps every COVID validation case COVID."""
    rng = np.random.default_rng(5)
    y_a = np.arange(300) % 3
    logits_a = rng.normal(scale=0.5, size=(300, 3)) + 3.0 * np.eye(3)[y_a]
    y_b = np.array([0, 0, 0, 1, 1, 1])  # covid, normal
    logits_b = np.array([[4.0, 0, 0], [4.0, 0, 0], [2.0, 0, 0], [2.5, 0, 0], [2.6, 0, 0], [2.4, 0, 0]])
    probs = _softmax(np.r_[logits_a, logits_b])
    y, sources = np.r_[y_a, y_b], ["a"] * 300 + ["b"] * 6
    fit = {"probs": probs, "y_true": y, "sources": sources, "min_site_cases": 3, "source_balance": 0.5}

    free = fit_decision_rule(**fit)
    guarded = fit_decision_rule(**fit, protected=[0])

    b_probs = probs[300:]
    assert free.adjust(b_probs).argmax(1)[:3].tolist() == [0, 0, 0]  # the global rule keeps them
    assert free.adjust(b_probs, ["b"] * 6).argmax(1)[:3].tolist() == [0, 0, 1]  # unguarded: one lost
    assert guarded.adjust(b_probs, ["b"] * 6).argmax(1)[:3].tolist() == [0, 0, 0]
    assert not np.allclose(guarded.bias_for("b"), guarded.bias)  # B still has a bias of its own
    assert (
        guarded.adjust(probs[:300], ["a"] * 300).argmax(1).tolist()
        == free.adjust(probs[:300], ["a"] * 300).argmax(1).tolist()
    )


def test_a_few_validation_cases_all_answered_right_do_not_drive_the_temperature_to_its_floor():
    """On a fresh installation a run's validation split holds ~15 cases; if the model answers them all
    right, the NLL keeps falling as T -> 0, and T = 0.05 made every served probability 0 or 1."""
    y = np.arange(15) % 3
    probs = np.full((15, 3), 0.1) + 0.7 * np.eye(3)[y]  # right, at 0.8
    rule = fit_decision_rule(probs=probs, y_true=y, sources=["a"] * 15)
    assert rule.temperature > 0.5
    assert rule.adjust(probs).max() < 0.999
