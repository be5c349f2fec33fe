"""Test-split evaluation: metrics, patient-level bootstrap intervals, calibration, per-source results, shortcut check.

Pure numpy/scikit-learn; every result is JSON-serialisable (plain floats, lists and None, never NaN).
"""

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_curve
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from inference.services import PROBABILITY_FLOOR, DecisionRule  # the rule fitted here is the one deployed

COVID = "covid"
MAX_FPR = 0.05  # specificity >= 0.95
CI_PERCENTILES = (2.5, 97.5)
ROC_MAX_POINTS = 100
RATES = ("sensitivity", "specificity", "ppv", "npv")

AUC_DROP_WITHIN_SOURCE = 0.15
MIN_SOURCE_IMAGES = 10
MIN_CLASS_IMAGES = 5
SOURCE_PROBE_HIGH = 0.9
PROBE_GAP = 0.2
BIAS_LIMIT = 6.0  # |log-odds shift| of the decision rule
# The temperature's prior, in validation cases' worth, pulling log T towards 0 (T = 1): on a few
# validation cases that the model all answers right the NLL falls for ever as T -> 0, and a run on a
# fresh installation (40 samples and a new hospital's 20 studies: 15 validation cases) fitted T = 0.05,
# which made every served probability 0 or 1. On ~200 cases the prior moves T by about 1%.
TEMPERATURE_PRIOR_CASES = 2.0


def evaluate_predictions(
    *,
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    patients: list[str],
    sources: list[str],
    bootstrap_rounds: int = 500,
    seed: int = 0,
) -> dict:
    """Metrics of softmax `probs` against `y_true`, with 95% intervals from resampling patients."""
    y_true, probs = _checked(y_true, probs, n_classes=len(class_names))
    if not len(patients) == len(sources) == len(y_true):
        raise ValueError("patients and sources need one entry per prediction.")
    n = len(y_true)
    covid = class_names.index(COVID) if COVID in class_names else None
    point = _weighted_metrics(y_true, probs, np.ones((1, n)), covid)
    rounds = _weighted_metrics(y_true, probs, _patient_bootstrap_weights(patients, bootstrap_rounds, seed), covid)
    support = np.bincount(y_true, minlength=len(class_names))
    count, confidence, accuracy = _calibration_bins(probs, y_true)
    return {
        "n": n,
        "accuracy": _value(point["accuracy"][0]),
        "macro_auc": _value(point["macro_auc"][0]),
        "class_names": list(class_names),
        "confusion_matrix": confusion_matrix(y_true, probs.argmax(axis=1), labels=range(len(class_names))).tolist(),
        "per_class": {
            name: {
                "support": int(support[c]),
                **{rate: _value(point[rate][0, c]) for rate in RATES},
                "auc": _value(point["auc"][0, c]),
            }
            for c, name in enumerate(class_names)
        },
        "covid_sensitivity_at_95_specificity": _value(point["covid_sensitivity"][0]),
        "ci": {
            "accuracy": _interval(rounds["accuracy"]),
            "macro_auc": _interval(rounds["macro_auc"]),
            "covid_sensitivity_at_95_specificity": _interval(rounds["covid_sensitivity"]),
            "per_class": {
                name: {metric: _interval(rounds[metric][:, c]) for metric in (*RATES, "auc")}
                for c, name in enumerate(class_names)
            },
        },
        "roc": {name: _roc_points(y_true == c, probs[:, c]) for c, name in enumerate(class_names)},
        "calibration": {
            "ece": _ece(count, confidence, accuracy),
            "reliability": {
                "bin_confidence": confidence.tolist(),
                "bin_accuracy": accuracy.tolist(),
                "bin_count": count.tolist(),
            },
        },
        "per_source": {
            source: _source_metrics(y_true, probs, np.asarray(sources) == source, class_names)
            for source in sorted(set(sources))
        },
    }


def expected_calibration_error(*, probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """ECE over `bins` equal-width bins of max-probability confidence."""
    y_true, probs = _checked(y_true, probs)
    return _ece(*_calibration_bins(probs, y_true, bins))


def stratum_weights(*, y_true: np.ndarray, sources: list[str], power: float = 1.0) -> np.ndarray:
    """One weight per case, count(source, class) ** -power, scaled to mean 1.

    With power 1 every (source, class) stratum weighs the same in total: a new hospital's 20
    images count as much as another hospital's 1,000; power 0 is no weighting."""
    keys = [f"{source}\x00{label}" for source, label in zip(sources, np.asarray(y_true).tolist(), strict=True)]
    if not keys:
        return np.zeros(0)
    _, stratum, counts = np.unique(np.asarray(keys), return_inverse=True, return_counts=True)
    weights = counts[stratum].astype(float) ** -power
    return weights * (len(weights) / weights.sum())


def fit_decision_rule(
    *,
    probs: np.ndarray,
    y_true: np.ndarray,
    sources: list[str],
    min_site_cases: int = 4,
    site_prior_strength: float = 1.0,
    source_balance: float = 1.0,
    protected: Sequence[int] = (),
) -> DecisionRule:
    """The deployed decision rule, fitted on validation outputs.

    A temperature and a per-class bias minimise the NLL of softmax(log p / T + b) (bias-corrected
    temperature scaling), each case weighted by ``stratum_weights(power=source_balance)``: the
    training's own balance (full balance, 1.0, let a rare site's two validation images set the
    bias for every site). Each site with at least
    ``min_site_cases`` validation cases gets its own bias, fitted to its cases (class-balanced)
    and pulled towards the global bias with a weight of ``site_prior_strength`` cases: a prior
    (label-shift) correction, so a model that ranks a new hospital's images well stops calling
    its normals COVID. A site's validation cases must hold two classes (one class alone says nothing
    about where the boundary lies: four normals would teach "never COVID"). ``protected`` classes
    (the gate's required sensitivities: COVID) are not traded: the site's bias is moved back towards
    the global one until every protected validation case of the site the global rule decides right
    stays right by at least PROTECT_MARGIN in log-odds (or its global margin, if smaller).
    The temperature has a prior of TEMPERATURE_PRIOR_CASES cases at T = 1, so that a few validation
    cases all answered right do not drive it to its floor. Fewer than 2 validation cases give the
    identity rule."""
    y_true = np.asarray(y_true, dtype=int)
    if len(y_true) < 2:
        return DecisionRule()
    y_true, probs = _checked(y_true, probs)
    n_classes = probs.shape[1]
    log_p = np.log(np.clip(probs, PROBABILITY_FLOOR, 1.0))
    weights = stratum_weights(y_true=y_true, sources=sources, power=source_balance)

    prior = TEMPERATURE_PRIOR_CASES / len(y_true)  # the NLL is a mean over the cases

    def global_loss(params: np.ndarray) -> float:
        bias = np.r_[0.0, params[1:]]
        nll = _weighted_nll(log_p / np.exp(params[0]) + bias, y_true, weights)
        return nll + prior * float(params[0] ** 2) + 1e-3 * float(bias @ bias)

    bounds = [(np.log(0.05), np.log(20.0))] + [(-BIAS_LIMIT, BIAS_LIMIT)] * (n_classes - 1)
    fitted = minimize(global_loss, np.zeros(n_classes), method="L-BFGS-B", bounds=bounds).x
    temperature, bias = float(np.exp(fitted[0])), np.r_[0.0, fitted[1:]]
    scaled = log_p / temperature

    site_bias = {}
    sources_array = np.asarray(sources)
    for site in sorted(set(sources)):
        mask = sources_array == site
        if mask.sum() < min_site_cases or len(set(y_true[mask].tolist())) < 2:
            continue
        site_weights = stratum_weights(y_true=y_true[mask], sources=[site] * int(mask.sum()))

        def site_loss(b: np.ndarray, mask: np.ndarray = mask, site_weights: np.ndarray = site_weights) -> float:
            nll = _weighted_nll(scaled[mask] + b, y_true[mask], site_weights) * len(site_weights)
            return nll + site_prior_strength * float((b - bias) @ (b - bias))

        fitted_site = minimize(site_loss, bias, method="L-BFGS-B", bounds=[(-BIAS_LIMIT, BIAS_LIMIT)] * n_classes).x
        fitted_site = _protective(bias, fitted_site, scaled[mask], y_true[mask], protected)
        site_bias[site] = tuple(float(b) for b in fitted_site - fitted_site[0])
    return DecisionRule(temperature=temperature, bias=tuple(float(b) for b in bias), site_bias=site_bias)


PROTECT_MARGIN = 0.5  # log-odds a protected validation case keeps over the runner-up under a site's bias


def _margins(logits: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    """Each case's true-class logit minus the highest other one (> 0: decided right)."""
    rows = np.arange(len(y_true))
    others = logits.copy()
    others[rows, y_true] = -np.inf
    return logits[rows, y_true] - others.max(axis=1)


def _protective(
    bias: np.ndarray, site: np.ndarray, scaled: np.ndarray, y_true: np.ndarray, protected: Sequence[int]
) -> np.ndarray:
    """The largest step from ``bias`` towards ``site`` (in tenths) that keeps every protected
    validation case decided right by the global bias right, by PROTECT_MARGIN or its own margin."""
    keep = np.isin(y_true, list(protected))
    if not keep.any():
        return site
    before = _margins(scaled[keep] + bias, y_true[keep])
    guarded = before > 0
    needed = np.minimum(before[guarded], PROTECT_MARGIN)
    for step in np.linspace(1.0, 0.0, 11):
        candidate = bias + step * (site - bias)
        if np.all(_margins(scaled[keep] + candidate, y_true[keep])[guarded] >= needed - 1e-9):
            return candidate
    return bias


def _weighted_nll(logits: np.ndarray, y_true: np.ndarray, weights: np.ndarray) -> float:
    rows = np.arange(len(y_true))
    return float(-(weights * log_softmax(logits, axis=1)[rows, y_true]).sum() / weights.sum())


def shortcut_check(
    *,
    metrics: dict,
    embeddings: np.ndarray | None,
    y_true: np.ndarray,
    sources: list[str],
    class_names: list[str],
    seed: int = 0,
) -> dict:
    """Warn when good metrics may come from telling sources apart rather than classes (DeGrave et al. 2021).

    Each rule that fires adds a sentence to "reasons" and sets "warning":
    (a) the mean per-source macro AUC (sources with >= 2 classes and >= 10 images) is more than 0.15 below
        the overall macro AUC of `metrics`;
    (b) with `embeddings` (N, D) and >= 2 sources of >= 10 images: a cross-validated standardised logistic
        regression predicts the source with balanced accuracy >= 0.9, more than 0.2 above the mean balanced
        accuracy of probes predicting the class within each source (sources with >= 2 classes of >= 5 images);
    (c) no source contains more than one class, or some class never has >= 5 images in a source that also holds
        >= 5 images of another class: separating it from the others within one hospital cannot be shown.
    Probes and means that the data cannot support are None; tiny inputs never raise.
    """
    y_true = np.asarray(y_true, dtype=int)
    sources = np.asarray(sources)
    reasons = []

    overall = metrics.get("macro_auc")
    within = _mean_within_source_auc(metrics.get("per_source") or {})
    if overall is not None and within is not None and within < overall - AUC_DROP_WITHIN_SOURCE:
        reasons.append(
            f"macro AUC is {overall:.2f} overall but only {within:.2f} on average within single sources: "
            "the overall figure rests on differences between sources"
        )

    source_probe = class_probe = None
    if embeddings is not None:
        embeddings = np.asarray(embeddings, dtype=float)
        if len(embeddings) != len(y_true):
            raise ValueError("embeddings need one row per prediction.")
        source_probe = _source_probe(embeddings, sources, seed)
        class_probe = _class_probe_within_sources(embeddings, y_true, sources, seed)
        if (
            source_probe is not None
            and class_probe is not None
            and source_probe >= SOURCE_PROBE_HIGH
            and source_probe - class_probe > PROBE_GAP
        ):
            reasons.append(
                f"the model's features identify the source ({source_probe:.2f}) "
                f"much better than the class within a source ({class_probe:.2f})"
            )

    reasons.extend(_confounding_reasons(y_true, sources, class_names))
    return {
        "warning": bool(reasons),
        "reasons": reasons,
        "source_probe_balanced_accuracy": source_probe,
        "class_probe_balanced_accuracy_within_source": class_probe,
        "within_source_macro_auc": within,
    }


def _checked(y_true: np.ndarray, probs: np.ndarray, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or len(probs) != len(y_true) or len(y_true) == 0:
        raise ValueError("probs must be (N, C) with N = len(y_true) > 0.")
    if n_classes is not None and probs.shape[1] != n_classes:
        raise ValueError(f"probs has {probs.shape[1]} columns for {n_classes} class names.")
    if y_true.min() < 0 or y_true.max() >= probs.shape[1]:
        raise ValueError("y_true holds a class index outside probs' columns.")
    return y_true, probs


def _weighted_metrics(
    y_true: np.ndarray, probs: np.ndarray, weights: np.ndarray, covid: int | None
) -> dict[str, np.ndarray]:
    """Metrics with images weighted by `weights` (R, N): one row per weighting, NaN where undefined.

    Ones give the point estimate, patient multiplicities a bootstrap round, a 0/1 mask one source.
    """
    n_classes = probs.shape[1]
    true = np.eye(n_classes)[y_true]
    predicted = np.eye(n_classes)[probs.argmax(axis=1)]
    total = weights.sum(axis=1)
    tp = weights @ (true * predicted)
    positives = weights @ true
    fp = weights @ predicted - tp
    fn = positives - tp
    tn = total[:, None] - positives - fp
    groups = [_score_groups(probs[:, c], y_true == c, weights) for c in range(n_classes)]
    auc = np.stack([_auc(*group) for group in groups], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        result = {
            "accuracy": weights @ (probs.argmax(axis=1) == y_true) / total,
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
        }
    defined = (~np.isnan(auc)).sum(axis=1)
    result["auc"] = auc
    result["macro_auc"] = np.where(defined > 0, np.nansum(auc, axis=1) / np.maximum(defined, 1), np.nan)
    result["covid_sensitivity"] = (
        _sensitivity_at_max_fpr(*groups[covid]) if covid is not None else np.full(len(weights), np.nan)
    )
    return result


def _score_groups(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative weight at each distinct score, scores ascending: two (R, G) arrays."""
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    weights = weights[:, order]
    positive = positive[order]
    return np.add.reduceat(weights * positive, starts, axis=1), np.add.reduceat(weights * ~positive, starts, axis=1)


def _auc(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """ROC AUC (ties count half) from `_score_groups`; NaN without positives or negatives."""
    below = np.cumsum(negative, axis=1) - negative
    with np.errstate(invalid="ignore", divide="ignore"):
        return (positive * (below + 0.5 * negative)).sum(axis=1) / (positive.sum(axis=1) * negative.sum(axis=1))


def _sensitivity_at_max_fpr(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Highest TPR over thresholds with FPR <= MAX_FPR (the ROC curve's (0, 0) start always qualifies)."""
    tp = np.cumsum(positive[:, ::-1], axis=1)
    fp = np.cumsum(negative[:, ::-1], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tp / tp[:, -1:]
        fpr = fp / fp[:, -1:]
    best = np.where(fpr <= MAX_FPR, tpr, 0.0).max(axis=1)
    return np.where((tp[:, -1] > 0) & (fp[:, -1] > 0), best, np.nan)


def _patient_bootstrap_weights(patients: list[str], rounds: int, seed: int) -> np.ndarray:
    """(rounds, N) image weights: how often each image's patient was drawn, patients drawn with replacement."""
    _, patient_of_image = np.unique(np.asarray(patients), return_inverse=True)
    n_patients = int(patient_of_image.max()) + 1
    draws = np.random.default_rng(seed).integers(0, n_patients, size=(rounds, n_patients))
    flat = (draws + np.arange(rounds)[:, None] * n_patients).ravel()
    counts = np.bincount(flat, minlength=rounds * n_patients).reshape(rounds, n_patients)
    return counts[:, patient_of_image].astype(float)


def _interval(values: np.ndarray) -> list[float | None]:
    defined = values[~np.isnan(values)]
    if defined.size == 0:
        return [None, None]
    low, high = np.percentile(defined, CI_PERCENTILES)
    return [float(low), float(high)]


def _value(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _roc_points(positive: np.ndarray, scores: np.ndarray) -> dict[str, list[float]]:
    """ROC curve downsampled to at most ROC_MAX_POINTS points; empty without positives or negatives."""
    if positive.all() or not positive.any():
        return {"fpr": [], "tpr": []}
    fpr, tpr, _ = roc_curve(positive, scores)
    if len(fpr) > ROC_MAX_POINTS:
        keep = np.unique(np.linspace(0, len(fpr) - 1, ROC_MAX_POINTS).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}


def _calibration_bins(
    probs: np.ndarray, y_true: np.ndarray, bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean confidence and accuracy of the non-empty bins (i/bins, (i+1)/bins] of max probability."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    filled = count > 0
    mean_confidence = np.bincount(index, weights=confidence, minlength=bins)[filled] / count[filled]
    accuracy = np.bincount(index, weights=correct, minlength=bins)[filled] / count[filled]
    return count[filled], mean_confidence, accuracy


def _ece(count: np.ndarray, confidence: np.ndarray, accuracy: np.ndarray) -> float:
    return float(np.sum(count * np.abs(accuracy - confidence)) / count.sum())


def _source_metrics(y_true: np.ndarray, probs: np.ndarray, in_source: np.ndarray, class_names: list[str]) -> dict:
    metrics = _weighted_metrics(y_true, probs, in_source[None, :].astype(float), covid=None)
    support = np.bincount(y_true[in_source], minlength=len(class_names))
    return {
        "n": int(in_source.sum()),
        "classes_present": [name for c, name in enumerate(class_names) if support[c] > 0],
        "accuracy": _value(metrics["accuracy"][0]),
        "macro_auc": _value(metrics["macro_auc"][0]),
        "per_class": {
            name: {
                "support": int(support[c]),
                "sensitivity": _value(metrics["sensitivity"][0, c]),
                "specificity": _value(metrics["specificity"][0, c]),
            }
            for c, name in enumerate(class_names)
        },
    }


def _mean_within_source_auc(per_source: dict) -> float | None:
    aucs = [
        result["macro_auc"]
        for result in per_source.values()
        if result.get("macro_auc") is not None and result.get("n", 0) >= MIN_SOURCE_IMAGES
    ]
    return float(np.mean(aucs)) if aucs else None


def _probe(features: np.ndarray, labels: np.ndarray, seed: int) -> float | None:
    """Cross-validated balanced accuracy of a standardised logistic regression; None if unsupported."""
    _, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2 or counts.min() < 2:
        return None
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    cv = StratifiedKFold(n_splits=min(5, int(counts.min())), shuffle=True, random_state=seed)
    return float(balanced_accuracy_score(labels, cross_val_predict(model, features, labels, cv=cv)))


def _source_probe(embeddings: np.ndarray, sources: np.ndarray, seed: int) -> float | None:
    names, counts = np.unique(sources, return_counts=True)
    keep = np.isin(sources, names[counts >= MIN_SOURCE_IMAGES])
    return _probe(embeddings[keep], sources[keep], seed)


def _class_probe_within_sources(
    embeddings: np.ndarray, y_true: np.ndarray, sources: np.ndarray, seed: int
) -> float | None:
    scores = []
    for source in np.unique(sources):
        in_source = sources == source
        classes, counts = np.unique(y_true[in_source], return_counts=True)
        keep = in_source & np.isin(y_true, classes[counts >= MIN_CLASS_IMAGES])
        score = _probe(embeddings[keep], y_true[keep], seed)
        if score is not None:
            scores.append(score)
    return float(np.mean(scores)) if scores else None


def _confounding_reasons(y_true: np.ndarray, sources: np.ndarray, class_names: list[str]) -> list[str]:
    """Rule (c) of `shortcut_check`."""
    if all(len(np.unique(y_true[sources == source])) < 2 for source in np.unique(sources)):
        return [
            "no source contains more than one class; the model cannot be shown to separate classes within a hospital"
        ]
    shared = set()
    for source in np.unique(sources):
        classes, counts = np.unique(y_true[sources == source], return_counts=True)
        enough = classes[counts >= MIN_CLASS_IMAGES]
        if len(enough) >= 2:
            shared.update(enough.tolist())
    alone = [class_names[c] for c in np.unique(y_true) if c not in shared]
    if not alone:
        return []
    one = len(alone) == 1
    return [
        f"{'class' if one else 'classes'} {', '.join(alone)} never {'has' if one else 'have'} "
        f"{MIN_CLASS_IMAGES}+ images in a source that also holds {MIN_CLASS_IMAGES}+ images of another class; "
        f"the model cannot be shown to separate {'it' if one else 'them'} from the other classes within a hospital"
    ]
