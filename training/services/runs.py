"""Training runs: create (and dispatch), execute (snapshot → train → evaluate → gate), schedule."""

import logging
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from inference.services import apply_temperature, predict_arrays
from studies.models import Review, Split
from training.evaluation import evaluate_predictions, fit_temperature, shortcut_check
from training.model_card import model_card_render
from training.models import DatasetSnapshot, ModelVersion, TrainingRun
from training.plots import plot_confusion_matrix, plot_reliability, plot_roc, plot_training_curves
from training.selectors import model_version_get_active, snapshot_latest, training_run_in_progress
from training.services.registry import (
    GateDecision,
    model_version_load,
    model_version_promote,
    model_version_register,
    promotion_decision,
)
from training.services.snapshots import snapshot_create
from training.tasks import training_run_execute_task
from training.trainer import (
    ProgressCallback,
    TrainConfig,
    TrainResult,
    embeddings,
    load_images,
    predict_batches,
    train_model,
)

logger = logging.getLogger(__name__)

STALE_AFTER = timedelta(minutes=30)
MIN_TRAIN_IMAGES = 6


class TrainingError(Exception):
    """A run cannot go on; the message is stored on the run."""


@dataclass
class SplitData:
    paths: list[str]
    labels: np.ndarray
    patients: list[str]
    sources: list[str]


def train_config_from_settings(**overrides: object) -> TrainConfig:
    config = settings.TRAINING
    values = {
        "backbone": config["BACKBONE"],
        "weights": config["WEIGHTS"],
        "input_size": config["INPUT_SIZE"],
        "epochs": config["EPOCHS"],
        "batch_size": config["BATCH_SIZE"],
        "learning_rate": config["LEARNING_RATE"],
        "patience": config["PATIENCE"],
        "seed": config["SEED"],
        "class_names": tuple(settings.CLASS_NAMES),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


@transaction.atomic
def training_run_create(
    *,
    user: AbstractBaseUser | None,
    trigger: str = "manual",
    hyperparameters: dict | None = None,
    dispatch: bool = True,
) -> TrainingRun:
    """Queue a training run and dispatch it to the training queue once committed; one run at a time.

    ``dispatch=False`` is for ``manage.py train``, which executes the run in its own process."""
    busy = training_run_in_progress()
    if busy is not None:
        raise ValidationError(f"Training run {busy.pk} is already {busy.status}; wait for it to finish.")
    run = TrainingRun.objects.create(triggered_by=user, trigger=trigger, hyperparameters=hyperparameters or {})
    if dispatch:
        transaction.on_commit(partial(training_run_execute_task.delay, run.pk))
    return run


def _release_stale_runs() -> None:
    cutoff = timezone.now() - STALE_AFTER
    TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, heartbeat_at__lt=cutoff).update(
        status=TrainingRun.Status.FAILED,
        error="The worker stopped answering (no heartbeat for 30 minutes).",
        finished_at=timezone.now(),
    )


def _claim(run: TrainingRun) -> bool:
    """Move a queued run to running. The database's one-running-run constraint is the lock."""
    _release_stale_runs()
    now = timezone.now()
    try:
        with transaction.atomic():
            claimed = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
                status=TrainingRun.Status.RUNNING, started_at=now, heartbeat_at=now
            )
    except IntegrityError:
        TrainingRun.objects.filter(pk=run.pk).update(
            status=TrainingRun.Status.FAILED,
            error="Another training run was running; runs never overlap.",
            finished_at=now,
        )
        return False
    return bool(claimed)


class _RunRecorder:
    """Writes progress, log lines and a heartbeat to the run row as training goes."""

    def __init__(self, run: TrainingRun, listener: ProgressCallback | None) -> None:
        self.run = run
        self.listener = listener
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        logger.info("training run %s: %s", self.run.pk, message)
        self.lines.append(f"{timezone.now():%H:%M:%S} {message}")
        self.update()

    def update(self, **fields: object) -> None:
        fields.update(log="\n".join(self.lines), heartbeat_at=timezone.now())
        TrainingRun.objects.filter(pk=self.run.pk).update(**fields)

    def epoch_end(self, epoch: int, epochs: int, logs: dict[str, float]) -> None:
        summary = ", ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "learning_rate")
        self.lines.append(f"{timezone.now():%H:%M:%S} epoch {epoch}/{epochs}: {summary}")
        self.update(epoch=epoch, epochs=epochs, progress=0.1 + 0.75 * epoch / epochs, metrics={"current": logs})
        if self.listener is not None:
            self.listener(epoch, epochs, logs)


def _split_data(snapshot: DatasetSnapshot, split: str, class_names: list[str]) -> SplitData:
    items = snapshot.items.filter(split=split).select_related("study__patient").order_by("study_id")
    rows = [(i.study.image.path, class_names.index(i.label), i.study.patient.ref, i.study.source) for i in items]
    return SplitData(
        paths=[r[0] for r in rows],
        labels=np.array([r[1] for r in rows], dtype=np.int64),
        patients=[r[2] for r in rows],
        sources=[r[3] or "unknown" for r in rows],
    )


def _evaluate_active(
    active: ModelVersion, test: SplitData, x_test: np.ndarray, class_names: list[str], *, seed: int
) -> dict | None:
    """Score the active model on the same frozen test cases as the candidate (``x_test``, decoded
    at the candidate's size, is reused when the active model takes the same size)."""
    if active.class_names != class_names:
        return None
    images = x_test if x_test.shape[1] == active.input_size else load_images(test.paths, active.input_size)
    probs = predict_arrays(model_version_load(version=active), images)
    return evaluate_predictions(
        y_true=test.labels,
        probs=probs,
        class_names=class_names,
        patients=test.patients,
        sources=test.sources,
        bootstrap_rounds=settings.TRAINING["BOOTSTRAP_ROUNDS"],
        seed=seed,
    )


def _save_plots(run: TrainingRun, history: dict, metrics: dict, class_names: list[str]) -> dict[str, str]:
    folder = Path("training_runs") / str(run.pk)
    (Path(settings.MEDIA_ROOT) / folder).mkdir(parents=True, exist_ok=True)
    plots = {
        "training_curves": lambda p: plot_training_curves(history, p),
        "confusion_matrix": lambda p: plot_confusion_matrix(metrics["confusion_matrix"], class_names, p),
        "roc": lambda p: plot_roc(
            metrics["roc"], p, aucs={c: (metrics["per_class"][c] or {}).get("auc") for c in class_names}
        ),
        "reliability": lambda p: plot_reliability(metrics["calibration"], p),
    }
    saved = {}
    for name, draw in plots.items():
        relative = str(folder / f"{name}.png")
        draw(default_storage.path(relative))
        saved[name] = relative
    return saved


def _reproduce_text(config: TrainConfig, snapshot: DatasetSnapshot) -> str:
    return (
        "# the same curated data (snapshot "
        f"{snapshot.pk}, content hash {snapshot.content_hash[:16]}…), then:\n"
        f"TRAINING_BACKBONE={config.backbone} TRAINING_WEIGHTS={config.weights} "
        f"TRAINING_INPUT_SIZE={config.input_size} TRAINING_EPOCHS={config.epochs} "
        f"TRAINING_BATCH_SIZE={config.batch_size} TRAINING_LEARNING_RATE={config.learning_rate} "
        f"TRAINING_PATIENCE={config.patience} TRAINING_SEED={config.seed} python manage.py train"
    )


def training_run_execute(*, run_id: int, listener: ProgressCallback | None = None) -> TrainingRun:
    """Snapshot the curated data, train, evaluate on the frozen test split, gate, register.

    ``listener`` hears each epoch's end (the terminal progress bar of ``manage.py train``)."""
    run = TrainingRun.objects.get(pk=run_id)
    if not _claim(run):
        run.refresh_from_db()
        return run
    recorder = _RunRecorder(run, listener)
    try:
        _execute(run, recorder)
    except Exception as exc:
        logger.exception("training run %s failed", run_id)
        recorder.lines.append(f"FAILED: {exc}")
        recorder.update(status=TrainingRun.Status.FAILED, error=str(exc)[:4000], finished_at=timezone.now())
    run.refresh_from_db()
    return run


def _execute(run: TrainingRun, recorder: _RunRecorder) -> None:
    config = train_config_from_settings(**run.hyperparameters)
    class_names = list(config.class_names)
    snapshot = snapshot_create(user=run.triggered_by)
    recorder.log(f"Snapshot {snapshot.pk}: {snapshot.counts.get('by_split', {})} (hash {snapshot.content_hash[:12]})")
    recorder.update(snapshot=snapshot, hyperparameters=config.as_dict(), progress=0.02)
    train, val, test = (_split_data(snapshot, s, class_names) for s in (Split.TRAIN, Split.VAL, Split.TEST))
    if len(train.paths) < MIN_TRAIN_IMAGES or len(set(train.labels.tolist())) < 2:
        raise TrainingError(
            f"Not enough curated data: {len(train.paths)} training images in "
            f"{len(set(train.labels.tolist()))} classes; at least {MIN_TRAIN_IMAGES} images in 2 classes are needed."
        )

    recorder.log(f"Loading {len(train.paths)} train / {len(val.paths)} val / {len(test.paths)} test images")
    x_train, x_val, x_test = (load_images(d.paths, config.input_size) for d in (train, val, test))
    recorder.update(progress=0.1)
    recorder.log(f"Training {config.backbone} ({config.weights} weights) at {config.input_size}px")
    result = train_model(
        x_train=x_train, y_train=train.labels, x_val=x_val, y_val=val.labels, config=config,
        on_epoch_end=recorder.epoch_end,
    )  # fmt: skip
    recorder.log(f"Stopped after {result.epochs_run} epochs; best epoch {result.best_epoch}")
    recorder.update(history=result.history, progress=0.87)

    metrics = _evaluate_candidate(result, x_val, val, x_test, test, config)
    recorder.log(f"Test split: accuracy {metrics.get('accuracy')}, macro AUC {metrics.get('macro_auc')}")
    active = model_version_get_active()
    active_metrics = (
        _evaluate_active(active, test, x_test, class_names, seed=config.seed) if active and test.paths else None
    )
    decision = _gate(metrics, active, active_metrics, has_test=bool(test.paths))
    recorder.log(f"Gate: {'promote' if decision.promote else 'keep as candidate'}: {decision.reason}")

    comparison = None
    if active is not None:
        comparison = {
            "active_name": active.name,
            "active_metrics": active_metrics or {},
            "promoted": decision.promote,
            "reason": decision.reason,
        }
    version = _register(run, result, config, snapshot, metrics, comparison, decision)
    plots = _save_plots(run, result.history, metrics, class_names) if test.paths else {}
    recorder.log(f"Registered {version.name}")
    recorder.update(
        status=TrainingRun.Status.SUCCEEDED,
        progress=1.0,
        metrics=metrics,
        plots=plots,
        model_version=version,
        finished_at=timezone.now(),
    )


def _evaluate_candidate(
    result: TrainResult, x_val: np.ndarray, val: SplitData, x_test: np.ndarray, test: SplitData, config: TrainConfig
) -> dict:
    """Temperature from validation; every metric, and the shortcut check, on the frozen test split."""
    temperature = 1.0
    if len(x_val) >= 2:
        temperature = fit_temperature(probs=predict_batches(result.model, x_val), y_true=val.labels)
    metrics: dict = {"temperature": temperature, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch}
    if not len(x_test):
        return metrics
    raw = predict_batches(result.model, x_test)
    metrics.update(
        evaluate_predictions(
            y_true=test.labels,
            probs=apply_temperature(raw, temperature),
            class_names=list(config.class_names),
            patients=test.patients,
            sources=test.sources,
            bootstrap_rounds=settings.TRAINING["BOOTSTRAP_ROUNDS"],
            seed=config.seed,
        )
    )
    metrics["shortcut"] = shortcut_check(
        metrics=metrics,
        embeddings=embeddings(result.model, x_test),
        y_true=test.labels,
        sources=test.sources,
        class_names=list(config.class_names),
        seed=config.seed,
    )
    return metrics


def _gate(metrics: dict, active: ModelVersion | None, active_metrics: dict | None, *, has_test: bool) -> GateDecision:
    if active is None:
        return promotion_decision(candidate=metrics, active=None)
    if not has_test:
        return GateDecision(False, "The test split is empty; promote by hand if you trust this model.")
    if active_metrics is None:
        return GateDecision(False, f"The active model {active.name} has other classes; promote by hand.")
    return promotion_decision(candidate=metrics, active=active_metrics)


def _register(
    run: TrainingRun,
    result: TrainResult,
    config: TrainConfig,
    snapshot: DatasetSnapshot,
    metrics: dict,
    comparison: dict | None,
    decision: GateDecision,
) -> ModelVersion:
    """Save the artifact and model card as a version; activate it when the gate allows."""
    name = f"{config.backbone}-{timezone.now():%Y%m%d-%H%M%S}-run{run.pk}"
    card = model_card_render(
        name=name,
        architecture=config.backbone,
        hyperparameters=config.as_dict(),
        snapshot={"id": snapshot.pk, "content_hash": snapshot.content_hash, "counts": snapshot.counts},
        metrics=metrics,
        shortcut=metrics.get("shortcut"),
        comparison=comparison,
        reproduce=_reproduce_text(config, snapshot),
    )
    with tempfile.TemporaryDirectory() as folder:
        artifact = Path(folder) / "model.keras"
        result.model.save(artifact)
        version = model_version_register(
            name=name,
            artifact_path=artifact,
            architecture=config.backbone,
            class_names=list(config.class_names),
            input_size=config.input_size,
            metrics={**metrics, "active_comparison": comparison},
            hyperparameters=config.as_dict(),
            model_card=card,
            snapshot=snapshot,
        )
    version.gate_decision = decision.reason
    version.save(update_fields=["gate_decision"])
    if decision.promote:
        model_version_promote(model_version=version, user=run.triggered_by, reason=f"Promotion gate: {decision.reason}")
    return version


def new_reviews_since_last_snapshot() -> int:
    latest = snapshot_latest()
    return Review.objects.filter(id__gt=latest.last_review_id if latest else 0).count()


def retrain_if_due(*, min_new_reviews: int | None = None) -> TrainingRun | None:
    """The scheduled job: start a run when enough new reviews arrived since the last snapshot."""
    threshold = settings.RETRAIN_MIN_NEW_REVIEWS if min_new_reviews is None else min_new_reviews
    if training_run_in_progress() is not None or new_reviews_since_last_snapshot() < threshold:
        return None
    return training_run_create(user=None, trigger="schedule")
