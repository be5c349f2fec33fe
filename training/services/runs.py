"""Training runs: create (and dispatch), execute (snapshot → train → evaluate → gate → register)."""

import logging
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from config.celery import task_send
from inference.services import DecisionRule, predict_arrays
from studies.models import Split
from training.evaluation import fit_decision_rule, shortcut_check, stratum_weights
from training.gate import CaseSet, GateDecision, gate_decide
from training.model_card import model_card_render
from training.models import DatasetSnapshot, ModelVersion, TrainingRun
from training.plots import plot_confusion_matrix, plot_reliability, plot_roc, plot_training_curves
from training.selectors import model_version_get_active, snapshot_items_current, training_run_in_progress
from training.services.evaluations import SplitData, evaluation_cases_record, evaluation_metrics
from training.services.registry import (
    gate_policy,
    model_version_gate,
    model_version_load,
    model_version_promote,
    model_version_register,
)
from training.services.snapshots import snapshot_create
from training.tasks import training_run_execute_task
from training.trainer import (
    ProgressCallback,
    TrainConfig,
    TrainResult,
    embeddings,
    fine_tune_steps,
    load_images,
    predict_batches,
    train_model,
)

logger = logging.getLogger(__name__)

STALE_AFTER = timedelta(minutes=30)
MIN_TRAIN_IMAGES = 6


class TrainingError(Exception):
    """A run cannot go on; the message is stored on the run."""


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
        "warm_start": config["WARM_START"],
        "fine_tune_epochs": config["FINE_TUNE_EPOCHS"],
        "fine_tune_factor": config["FINE_TUNE_FACTOR"],
        "fine_tune_interpolation": config["FINE_TUNE_INTERPOLATION"],
        "source_balance": config["SOURCE_BALANCE"],
        "fine_tune_source_balance": config["FINE_TUNE_SOURCE_BALANCE"],
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


def training_run_create(
    *,
    user: AbstractBaseUser | None,
    trigger: str = "manual",
    hyperparameters: dict | None = None,
    dispatch: bool = True,
    note: str = "",
) -> TrainingRun:
    """Queue a training run and dispatch it to the training queue once committed; one run at a time
    (a run whose worker died, silent past STALE_AFTER, no longer counts). With the broker unreachable
    the run is failed at once with the reason (nothing would ever pick it up): the caller sees its
    status.

    ``dispatch=False`` is for ``manage.py train``, which executes the run in its own process."""
    with transaction.atomic():
        training_runs_release_stale()
        busy = training_run_in_progress()
        if busy is not None:
            raise ValidationError(f"Training run {busy.pk} is already {busy.status}; wait for it to finish.")
        run = TrainingRun.objects.create(
            triggered_by=user, trigger=trigger, hyperparameters=hyperparameters or {}, log=note
        )
        if dispatch:
            transaction.on_commit(partial(_training_run_dispatch, run))
    return run


def _training_run_dispatch(run: TrainingRun) -> None:
    if not task_send(training_run_execute_task, run.pk):
        run.status = TrainingRun.Status.FAILED
        run.error = "The task broker was unreachable, so the run was never started; start it again."
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "error", "finished_at"])


def training_runs_release_stale() -> None:
    """Fail the runs that hold the one-run-at-a-time slot for nothing: running without a heartbeat for
    STALE_AFTER (the worker died), or queued that long without a worker starting them (the message was
    lost or its task failed before it began). A late message for either finds it no longer queued."""
    now = timezone.now()
    cutoff = now - STALE_AFTER
    TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, heartbeat_at__lt=cutoff).update(
        status=TrainingRun.Status.FAILED,
        error="The worker stopped answering (no heartbeat for 30 minutes).",
        finished_at=now,
    )
    TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED, created_at__lt=cutoff).update(
        status=TrainingRun.Status.FAILED,
        error="No training worker started this run in 30 minutes (is worker-training up?); start it again.",
        finished_at=now,
    )


def _claim(run: TrainingRun) -> bool:
    """Move a queued run to running. The database's one-running-run constraint is the lock."""
    training_runs_release_stale()
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


HEARTBEAT_EVERY = STALE_AFTER / 10


@contextmanager
def _heartbeat(run_id: int) -> Iterator[None]:
    """Beat for the run from a thread of its own while it executes, so that one long step (loading images,
    an epoch of a big network on CPU) is never taken for a dead worker (STALE_AFTER); the thread dies with
    the process, and the run is then released as before."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(HEARTBEAT_EVERY.total_seconds()):
                try:
                    TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except DatabaseError:  # a database blip: the next beat tries again
                    logger.warning("training run %s: heartbeat not written", run_id, exc_info=True)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=beat, name=f"training-run-{run_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class _RunRecorder:
    """Writes progress, log lines and a heartbeat to the run row as training goes."""

    def __init__(self, run: TrainingRun, listener: ProgressCallback | None) -> None:
        self.run = run
        self.listener = listener
        self.lines: list[str] = [run.log] if run.log else []

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
    items = snapshot_items_current(snapshot).filter(split=split)
    rows = [
        (i.study_id, i.study.image.path, class_names.index(i.label), i.study.patient.ref, i.study.source or "unknown")
        for i in items
    ]
    return SplitData(
        study_ids=[r[0] for r in rows],
        paths=[r[1] for r in rows],
        labels=np.array([r[2] for r in rows], dtype=np.int64),
        patients=[r[3] for r in rows],
        sources=[r[4] for r in rows],
    )


def _warm_start_from(active: ModelVersion | None, config: TrainConfig) -> tuple[str | None, str]:
    """The active model's artifact to fine-tune, when asked for and compatible; and why (not)."""
    if not config.warm_start:
        return None, "from random initialisation (warm start off)"
    if active is None:
        return None, "from random initialisation (no active model)"
    if (active.architecture, active.input_size, list(active.class_names)) != (
        config.backbone,
        config.input_size,
        list(config.class_names),
    ):
        return None, f"from random initialisation ({active.name} has another architecture, size or classes)"
    return active.artifact.path, f"fine-tuning the active model {active.name}"


def _score_active(active: ModelVersion, test: SplitData, x_test: np.ndarray) -> np.ndarray:
    """The active model's deployed answers on the candidate's test cases (``x_test``, decoded at the
    candidate's size, is reused when the active model takes the same size)."""
    images = x_test if x_test.shape[1] == active.input_size else load_images(test.paths, active.input_size)
    return predict_arrays(model_version_load(version=active), images, sites=test.sources)


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


def _reproduce_text(config: TrainConfig, snapshot: DatasetSnapshot, how: str) -> str:
    fine_tune = how.startswith("fine-tuning")
    tuning = (
        f"TRAINING_FINE_TUNE_EPOCHS={config.fine_tune_epochs} TRAINING_FINE_TUNE_FACTOR={config.fine_tune_factor} "
        f"TRAINING_FINE_TUNE_INTERPOLATION={config.fine_tune_interpolation} "
        f"TRAINING_FINE_TUNE_SOURCE_BALANCE={config.fine_tune_source_balance} "
        if fine_tune
        else ""
    )
    return (
        "# the same curated data (snapshot "
        f"{snapshot.pk}, content hash {snapshot.content_hash[:16]}…), {how}, then:\n"
        f"TRAINING_BACKBONE={config.backbone} TRAINING_WEIGHTS={config.weights} "
        f"TRAINING_INPUT_SIZE={config.input_size} TRAINING_EPOCHS={config.epochs} "
        f"TRAINING_BATCH_SIZE={config.batch_size} TRAINING_LEARNING_RATE={config.learning_rate} "
        f"TRAINING_PATIENCE={config.patience} TRAINING_SEED={config.seed} "
        f"TRAINING_SOURCE_BALANCE={config.source_balance} {tuning}python manage.py train"
        + ("" if fine_tune else " --from-scratch")
    )


def training_run_execute(*, run_id: int, listener: ProgressCallback | None = None) -> TrainingRun:
    """Snapshot the curated data, train, fit the decision rule, evaluate on the frozen test split,
    register, gate against the active model case by case, and promote when the gate allows.

    ``listener`` hears each epoch's end (the terminal progress bar of ``manage.py train``)."""
    run = TrainingRun.objects.get(pk=run_id)
    if not _claim(run):
        run.refresh_from_db()
        return run
    recorder = _RunRecorder(run, listener)
    try:
        with _heartbeat(run.pk):
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
    active = model_version_get_active()
    initial, how = _warm_start_from(active, config)
    recorder.log(f"Training {config.backbone} ({config.weights} weights) at {config.input_size}px, {how}")
    balance = config.balance(fine_tune=initial is not None)
    result = train_model(
        x_train=x_train, y_train=train.labels, x_val=x_val, y_val=val.labels, config=config,
        w_train=stratum_weights(y_true=train.labels, sources=train.sources, power=balance),
        w_val=stratum_weights(y_true=val.labels, sources=val.sources, power=balance),
        initial_model=initial, on_epoch_end=recorder.epoch_end,
    )  # fmt: skip
    recorder.log(f"Stopped after {result.epochs_run} epochs; best epoch {result.best_epoch}")
    recorder.update(history=result.history, progress=0.87)
    weights_check_finite(result.model)

    rule, step = _choose_step(result, config, val, x_val, active, recorder)
    recorder.log(
        f"Decision rule: temperature {rule.temperature:.2f}, own biases for {sorted(rule.site_bias) or 'no site'}"
    )
    version = _register(run, result, config, snapshot, rule)
    decision = _judge(version, active, snapshot, test, x_test, result, config, recorder, how, step)
    plots = _save_plots(run, result.history, version.metrics, class_names) if test.paths else {}
    recorder.log(f"Registered {version.name}")
    recorder.update(
        status=TrainingRun.Status.SUCCEEDED,
        progress=1.0,
        metrics=version.metrics,
        plots=plots,
        model_version=version,
        finished_at=timezone.now(),
    )
    if decision.promote:
        model_version_promote(model_version=version, user=run.triggered_by, reason=f"Promotion gate: {decision.reason}")


def weights_check_finite(model: Any) -> None:
    """A diverged fit (a learning rate too high) has NaN or infinite weights: the run fails saying so,
    before anything is registered, judged or offered for promotion."""
    if not all(np.isfinite(weights).all() for weights in model.get_weights()):
        raise TrainingError(
            "Training diverged: the model's weights are not finite (NaN or infinity). Nothing was registered; "
            "start again with a lower learning rate."
        )


def _fit_rule(probs: np.ndarray, val: SplitData, config: TrainConfig) -> DecisionRule:
    class_names = list(config.class_names)
    return fit_decision_rule(
        probs=probs,
        y_true=val.labels,
        sources=val.sources,
        min_site_cases=settings.TRAINING["SITE_BIAS_MIN_CASES"],
        # The rule keeps the from-scratch balance: with full balance a stratum of one or two
        # validation images (an adult pneumonia) moved the global bias and cost COVID test answers.
        source_balance=config.source_balance,
        # A site's own bias never trades what the gate requires (COVID sensitivity) for its other classes.
        protected=[class_names.index(name) for name in gate_policy().required_sensitivities if name in class_names],
    )


def _choose_step(
    result: TrainResult,
    config: TrainConfig,
    val: SplitData,
    x_val: np.ndarray,
    active: ModelVersion | None,
    recorder: _RunRecorder,
) -> tuple[DecisionRule, float | None]:
    """The decision rule, and for a fine-tune how far its weights go from the active model's.

    The largest of ``fine_tune_steps`` (full step first, down to ``fine_tune_interpolation``) whose
    validation answers, under a rule fitted to them, the gate accepts against the active model's
    deployed answers on the same cases; the floor when none is accepted. Model selection on
    validation; the promotion is still decided on the test split. ``result.model`` is left at the
    chosen step."""
    if result.start_weights is None:
        return _fit_rule(predict_batches(result.model, x_val), val, config), None
    steps, active_cases = fine_tune_steps(config.fine_tune_interpolation), None
    if active is not None and len(val.labels) and active.class_names == list(config.class_names):
        active_cases = _case_set(val, _score_active(active, val, x_val), config)
    else:
        steps = steps[-1:]  # nothing to compare with: the floor
    for step in steps:
        probs = predict_batches(result.step(step), x_val)
        rule = _fit_rule(probs, val, config)
        if step == steps[-1]:
            break
        decision = gate_decide(
            candidate=_case_set(val, rule.adjust(probs, val.sources), config), active=active_cases, policy=gate_policy()
        )
        recorder.log(f"Fine-tune step {step:.2f} on validation: {'accepted' if decision.promote else 'refused'}")
        if decision.promote:
            break
    recorder.log(f"Weights {step:.2f} of the way from the active model's to the tuned ones")
    return rule, step


def _case_set(split: SplitData, probs: np.ndarray, config: TrainConfig) -> CaseSet:
    return CaseSet.build(
        class_names=config.class_names,
        study_ids=split.study_ids,
        patients=split.patients,
        sources=split.sources,
        y_true=split.labels,
        decided=np.asarray(probs).argmax(axis=1),
    )


def _register(
    run: TrainingRun, result: TrainResult, config: TrainConfig, snapshot: DatasetSnapshot, rule: DecisionRule
) -> ModelVersion:
    """Save the artifact with its decision rule as a candidate version."""
    name = f"{config.backbone}-{timezone.now():%Y%m%d-%H%M%S}-run{run.pk}"
    with tempfile.TemporaryDirectory() as folder:
        artifact = Path(folder) / "model.keras"
        result.model.save(artifact)
        return model_version_register(
            name=name,
            artifact_path=artifact,
            architecture=config.backbone,
            class_names=list(config.class_names),
            input_size=config.input_size,
            hyperparameters=config.as_dict(),
            decision_rule=rule.as_dict(),
            snapshot=snapshot,
        )


def _judge(
    version: ModelVersion,
    active: ModelVersion | None,
    snapshot: DatasetSnapshot,
    test: SplitData,
    x_test: np.ndarray,
    result: TrainResult,
    config: TrainConfig,
    recorder: _RunRecorder,
    how: str,
    step: float | None,
) -> GateDecision:
    """Store both versions' answers on the test split, compute metrics from them, gate, write the card.
    ``step``: how far a fine-tune's weights went from the active model's (None from scratch)."""
    class_names = list(config.class_names)
    rule = DecisionRule.from_dict(version.decision_rule)
    metrics: dict = {"temperature": rule.temperature, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch}
    if step is not None:
        metrics["fine_tune_step"] = step
    comparison = None
    if test.paths:
        probs = rule.adjust(predict_batches(result.model, x_test), test.sources)
        evaluation_cases_record(version=version, snapshot=snapshot, split=test, probabilities=probs)
        metrics.update(evaluation_metrics(version=version, snapshot=snapshot, seed=config.seed) or {})
        metrics["shortcut"] = shortcut_check(
            metrics=metrics,
            embeddings=embeddings(result.model, x_test),
            y_true=test.labels,
            sources=test.sources,
            class_names=class_names,
            seed=config.seed,
        )
        recorder.log(f"Test split: accuracy {metrics.get('accuracy')}, macro AUC {metrics.get('macro_auc')}")
        if active is not None and active.class_names == class_names:
            active_probs = _score_active(active, test, x_test)
            evaluation_cases_record(version=active, snapshot=snapshot, split=test, probabilities=active_probs)
            comparison = {
                "active_name": active.name,
                "active_metrics": evaluation_metrics(version=active, snapshot=snapshot, seed=config.seed) or {},
            }
    decision = model_version_gate(candidate=version, active=active)
    recorder.log(f"Gate: {'promote' if decision.promote else 'keep as candidate'}: {decision.reason}")
    if comparison is not None:
        comparison.update(promoted=decision.promote, reason=decision.reason)
    version.metrics = {**metrics, "active_comparison": comparison}
    version.gate = decision.as_dict()
    version.gate_decision = decision.reason
    version.model_card = model_card_render(
        name=version.name,
        architecture=config.backbone,
        hyperparameters=config.as_dict(),
        snapshot={"id": snapshot.pk, "content_hash": snapshot.content_hash, "counts": snapshot.counts},
        metrics=version.metrics,
        shortcut=metrics.get("shortcut"),
        comparison=comparison,
        gate=version.gate,
        decision_rule=version.decision_rule,
        reproduce=_reproduce_text(config, snapshot, how),
    )
    version.save(update_fields=["metrics", "gate", "gate_decision", "model_card"])
    return decision
