"""The promotion gate: the one rule for what makes a model better. Pure: cases in, a decision out.

Both models are judged on the same test cases, at the decision rule each would deploy. For each
scope (all cases, and every source with enough test patients) and each metric (balanced accuracy,
and the sensitivity of every class with enough cases there), a paired bootstrap over patients
(drawn within each source) gives the candidate-minus-active difference and its 95% interval.

No scope is judged on fewer than ``min_source_patients`` test patients: a test split with fewer refuses.

Default policy: promote when the candidate is non-inferior everywhere (every lower bound of balanced
accuracy and of COVID sensitivity above -margin); it is *better* where a lower bound is above zero. A
non-inferior tie goes to the candidate, which has seen more data.
"""

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

OVERALL = "overall"
FIRST_VERSION = "No active model: the first version is activated."
BALANCED_ACCURACY = "balanced_accuracy"
EMPTY_TEST_SPLIT = "The test split is empty: nothing shows the candidate is not worse."
TOO_FEW_PATIENTS = (
    "The test split holds {patients} patient(s); at least {needed} are needed to judge a candidate "
    "(PROMOTION_MIN_SOURCE_PATIENTS): kept as candidate. Review more studies, or promote it with an override "
    "and a reason."
)


@dataclass(frozen=True)
class CaseSet:
    """One model's decisions on a test split: one entry per case, in the same order for both models."""

    class_names: tuple[str, ...]
    study_ids: tuple[int, ...]
    patients: tuple[str, ...]
    sources: tuple[str, ...]
    y_true: np.ndarray  # (N,) class index
    decided: np.ndarray  # (N,) class index the model would answer

    @classmethod
    def build(
        cls,
        *,
        class_names: Sequence[str],
        study_ids: Sequence[int],
        patients: Sequence[str],
        sources: Sequence[str],
        y_true: Sequence[int] | np.ndarray,
        decided: Sequence[int] | np.ndarray,
    ) -> "CaseSet":
        cases = cls(
            class_names=tuple(class_names),
            study_ids=tuple(int(i) for i in study_ids),
            patients=tuple(patients),
            sources=tuple(sources),
            y_true=np.asarray(y_true, dtype=int),
            decided=np.asarray(decided, dtype=int),
        )
        if not len(cases.study_ids) == len(cases.patients) == len(cases.sources) == len(cases.y_true):
            raise ValueError("A case set needs one study, patient, source, label and decision per case.")
        if len(cases.decided) != len(cases.y_true):
            raise ValueError("A case set needs one decision per case.")
        return cases


@dataclass(frozen=True)
class GatePolicy:
    non_inferiority_margin: float = 0.03
    min_source_patients: int = 10  # a source is judged on its own from this many test patients
    min_class_cases: int = 5  # a class's sensitivity is judged in a scope from this many cases
    bootstrap_rounds: int = 2000
    promote_ties: bool = True
    # Non-inferiority is required of balanced accuracy and of these classes' sensitivity ("COVID
    # sensitivity included"); the other classes' sensitivities are shown and can make a candidate
    # better, but one swapped case among ~100 (a bound at -3/n) does not refuse it on its own:
    # balanced accuracy already carries them.
    required_sensitivities: tuple[str, ...] = ("covid",)
    seed: int = 0


@dataclass(frozen=True)
class Comparison:
    """One row of the decision's table: a metric in a scope, candidate against active."""

    scope: str  # "overall" or a source
    metric: str  # "balanced_accuracy" or "sensitivity:<class>"
    patients: int
    cases: int
    candidate: float
    active: float
    difference: float
    low: float  # 95% interval of the difference, paired bootstrap over patients
    high: float
    # "better" (low > 0), "non-inferior" (low > -margin), "inconclusive" (not shown non-inferior),
    # "worse" (high < 0: shown worse) or "not judged" (too few patients or cases). "worse" and "inconclusive" refuse.
    verdict: str


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    comparisons: tuple[Comparison, ...] = ()

    def as_dict(self) -> dict:
        return {"promote": self.promote, "reason": self.reason, "comparisons": [asdict(c) for c in self.comparisons]}

    @classmethod
    def from_dict(cls, data: dict) -> "GateDecision":
        return cls(
            promote=bool(data["promote"]),
            reason=data["reason"],
            comparisons=tuple(Comparison(**row) for row in data.get("comparisons", ())),
        )


def gate_decide(*, candidate: CaseSet, active: CaseSet | None, policy: GatePolicy) -> GateDecision:
    """Decide whether ``candidate`` may replace ``active``; both scored on the same test cases."""
    if active is None:
        return GateDecision(True, FIRST_VERSION)
    if candidate.class_names != active.class_names:
        return GateDecision(False, "The active model has other classes; they cannot be compared case by case.")
    if candidate.study_ids != active.study_ids or not np.array_equal(candidate.y_true, active.y_true):
        raise ValueError("Candidate and active model must be scored on the same test cases, in the same order.")
    if not candidate.study_ids:
        return GateDecision(False, EMPTY_TEST_SPLIT)
    test_patients = _patients_in(candidate, np.ones(len(candidate.patients), dtype=bool))
    if test_patients < policy.min_source_patients:
        # A bootstrap over one patient draws that patient every time: a zero-width interval, so one
        # case would make a model "better". No scope is judged on fewer patients than a source needs.
        return GateDecision(False, TOO_FEW_PATIENTS.format(patients=test_patients, needed=policy.min_source_patients))

    weights = _stratified_patient_bootstrap(candidate.patients, candidate.sources, policy)
    rows = []
    for scope, mask in _scopes(candidate):
        patients = _patients_in(candidate, mask)
        judged = scope == OVERALL or patients >= policy.min_source_patients
        for metric, columns in _metrics(candidate, mask, policy):
            rows.append(_compare(scope, metric, columns, mask, patients, candidate, active, weights, judged, policy))
    return _verdict(tuple(rows), policy)


def _patients_in(cases: CaseSet, mask: np.ndarray) -> int:
    """How many patients the masked cases hold: a patient key is per site, as everywhere in the platform."""
    pairs = zip(cases.sources, cases.patients, mask, strict=True)
    return len({(source, patient) for source, patient, inside in pairs if inside})


def _scopes(cases: CaseSet) -> list[tuple[str, np.ndarray]]:
    sources = np.asarray(cases.sources)
    return [(OVERALL, np.ones(len(sources), dtype=bool))] + [(s, sources == s) for s in sorted(set(cases.sources))]


def _metrics(cases: CaseSet, mask: np.ndarray, policy: GatePolicy) -> list[tuple[str, list[int]]]:
    """Balanced accuracy over the classes present in the scope; per-class sensitivity where supported."""
    support = np.bincount(cases.y_true[mask], minlength=len(cases.class_names))
    present = [c for c in range(len(cases.class_names)) if support[c] > 0]
    metrics = [(BALANCED_ACCURACY, present)]
    if len(present) > 1:
        metrics += [
            (f"sensitivity:{cases.class_names[c]}", [c]) for c in present if support[c] >= policy.min_class_cases
        ]
    return metrics


def _stratified_patient_bootstrap(patients: Sequence[str], sources: Sequence[str], policy: GatePolicy) -> np.ndarray:
    """(R, N) case weights: each source's patients drawn with replacement, as many as it has."""
    rng = np.random.default_rng(policy.seed)
    patients_array, sources_array = np.asarray(patients), np.asarray(sources)
    weights = np.zeros((policy.bootstrap_rounds, len(patients_array)))
    for source in sorted(set(sources)):
        in_source = np.flatnonzero(sources_array == source)
        _, patient_of_case = np.unique(patients_array[in_source], return_inverse=True)
        n = int(patient_of_case.max()) + 1
        draws = rng.integers(0, n, size=(policy.bootstrap_rounds, n))
        counts = np.stack([np.bincount(row, minlength=n) for row in draws])
        weights[:, in_source] = counts[:, patient_of_case]
    return weights


def _mean_sensitivity(cases: CaseSet, columns: list[int], weights: np.ndarray) -> np.ndarray:
    """Mean sensitivity over ``columns`` for each weighting row (balanced accuracy when all present)."""
    values = []
    for c in columns:
        positive = cases.y_true == c
        hit = positive & (cases.decided == c)
        with np.errstate(invalid="ignore", divide="ignore"):
            values.append((weights @ hit) / (weights @ positive))
    if not values:
        return np.full(len(weights), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a round that drew no case of a class
        return np.nanmean(np.stack(values), axis=0)


def _compare(
    scope: str,
    metric: str,
    columns: list[int],
    mask: np.ndarray,
    patients: int,
    candidate: CaseSet,
    active: CaseSet,
    weights: np.ndarray,
    judged: bool,
    policy: GatePolicy,
) -> Comparison:
    point = mask[None, :].astype(float)
    scoped = weights * mask[None, :]
    new, old = _mean_sensitivity(candidate, columns, point)[0], _mean_sensitivity(active, columns, point)[0]
    with np.errstate(invalid="ignore"):
        differences = _mean_sensitivity(candidate, columns, scoped) - _mean_sensitivity(active, columns, scoped)
    defined = differences[~np.isnan(differences)]
    low, high = np.percentile(defined, (2.5, 97.5)) if defined.size else (new - old, new - old)
    if not judged:
        verdict = "not judged"
    elif low > 0:
        verdict = "better"
    elif low > -policy.non_inferiority_margin:
        verdict = "non-inferior"
    elif high < 0:
        verdict = "worse"
    else:
        verdict = "inconclusive"
    return Comparison(
        scope=scope,
        metric=metric,
        patients=patients,
        cases=int(mask.sum()),
        candidate=float(new),
        active=float(old),
        difference=float(new - old),
        low=float(low),
        high=float(high),
        verdict=verdict,
    )


def _describe(row: Comparison) -> str:
    return (
        f"{row.metric.replace('_', ' ')} on {row.scope} {row.active:.3f} → {row.candidate:.3f} "
        f"(difference {row.difference:+.3f}, 95% CI {row.low:+.3f} to {row.high:+.3f})"
    )


REFUSING = ("worse", "inconclusive")


def required(row: Comparison, policy: GatePolicy) -> bool:
    """Whether a comparison must be non-inferior for a promotion."""
    if row.metric == "balanced_accuracy":
        return True
    return row.metric.removeprefix("sensitivity:") in policy.required_sensitivities


def _verdict(rows: tuple[Comparison, ...], policy: GatePolicy) -> GateDecision:
    worse = [row for row in rows if row.verdict in REFUSING and required(row, policy)]
    better = [row for row in rows if row.verdict == "better"]
    margin = policy.non_inferiority_margin
    if worse:
        worst = sorted(worse, key=lambda row: row.low)
        return GateDecision(
            False,
            f"Not shown non-inferior (lower bound not above -{margin:.2f}): "
            + "; ".join(_describe(row) for row in worst[:3])
            + "; kept as candidate.",
            rows,
        )
    if better:
        best = sorted(better, key=lambda row: -row.low)
        return GateDecision(
            True,
            "Better: "
            + "; ".join(_describe(row) for row in best[:3])
            + f"; non-inferior everywhere (margin {margin:.2f}).",
            rows,
        )
    if policy.promote_ties:
        return GateDecision(
            True,
            f"Non-inferior everywhere (margin {margin:.2f}) and better nowhere: a tie goes to the candidate, "
            "which has seen more data.",
            rows,
        )
    return GateDecision(False, "Non-inferior everywhere but better nowhere; ties stay with the active model.", rows)
