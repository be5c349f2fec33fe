"""Per-case results: a version's answers on a snapshot's test split, stored, and metrics computed from them."""

from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import transaction

from training.evaluation import evaluate_predictions
from training.models import DatasetSnapshot, EvaluationCase, ModelVersion


@dataclass(frozen=True)
class SplitData:
    """One split of a snapshot, in study order."""

    study_ids: list[int]
    paths: list[str]
    labels: np.ndarray
    patients: list[str]
    sources: list[str]


@transaction.atomic
def evaluation_cases_record(
    *, version: ModelVersion, snapshot: DatasetSnapshot, split: SplitData, probabilities: np.ndarray
) -> int:
    """Store (or replace) a version's adjusted probabilities and decisions on a snapshot's test split."""
    names = list(version.class_names)
    EvaluationCase.objects.filter(model_version=version, snapshot=snapshot).delete()
    EvaluationCase.objects.bulk_create(
        [
            EvaluationCase(
                model_version=version,
                snapshot=snapshot,
                study_id=study_id,
                study_key=study_id,
                patient=patient,
                source=source,
                label=names[int(label)],
                probabilities=[float(p) for p in probs],
                decided=names[int(np.argmax(probs))],
            )
            for study_id, patient, source, label, probs in zip(
                split.study_ids, split.patients, split.sources, split.labels, probabilities, strict=True
            )
        ],
        batch_size=500,
    )
    return len(split.study_ids)


def evaluation_metrics(*, version: ModelVersion, snapshot: DatasetSnapshot, seed: int = 0) -> dict | None:
    """Every test-split metric of a version, recomputed from its stored cases; None without cases."""
    rows = list(
        EvaluationCase.objects.filter(model_version=version, snapshot=snapshot)
        .order_by("study_key")
        .values_list("label", "probabilities", "patient", "source")
    )
    if not rows:
        return None
    names = list(version.class_names)
    return evaluate_predictions(
        y_true=np.array([names.index(r[0]) for r in rows]),
        probs=np.array([r[1] for r in rows], dtype=float),
        class_names=names,
        patients=[r[2] for r in rows],
        sources=[r[3] for r in rows],
        bootstrap_rounds=settings.TRAINING["BOOTSTRAP_ROUNDS"],
        seed=seed,
    )
