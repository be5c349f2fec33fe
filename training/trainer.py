"""Keras training on preprocessed arrays: tf.data with caching and augmentation (geometry, and
site/scanner differences), per-case weights, early stopping on a weighted validation loss, an
optional warm start from an existing model, deterministic seeds. No Django imports."""

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from inference.preprocessing import load_and_preprocess
from training.architectures import build_model

ProgressCallback = Callable[[int, int, dict[str, float]], None]


@dataclass(frozen=True)
class TrainConfig:
    backbone: str
    weights: str
    input_size: int
    epochs: int
    batch_size: int
    learning_rate: float
    patience: int
    seed: int
    class_names: tuple[str, ...]
    # Start from the active model's weights (fine-tuning) at learning_rate * fine_tune_factor.
    warm_start: bool = False
    fine_tune_epochs: int = 15
    fine_tune_factor: float = 0.3
    # A fine-tune ends at (1 - x) * starting weights + x * tuned weights (WiSE-FT); x is the largest
    # of FINE_TUNE_STEPS down to this floor whose validation answers the gate accepts against the
    # active model (training/services/runs.py), else the floor: half-way kept the old sites' answers
    # that a full step moved at random, a new site's needed more.
    fine_tune_interpolation: float = 0.5
    # Per-case weight count(source, class) ** -balance (1: every stratum equal; 0: none); a
    # fine-tune, there to learn what is new (a small site), weighs strata more evenly.
    source_balance: float = 0.5
    fine_tune_source_balance: float = 1.0

    def balance(self, *, fine_tune: bool) -> float:
        return self.fine_tune_source_balance if fine_tune else self.source_balance

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "class_names": list(self.class_names)}


FINE_TUNE_STEPS = (1.0, 0.75, 0.5, 0.25)


def fine_tune_steps(floor: float) -> list[float]:
    """The fractions of a fine-tune's step to try, largest first, down to ``floor``."""
    return sorted({step for step in FINE_TUNE_STEPS if step >= floor} | {floor}, reverse=True)


@dataclass
class TrainResult:
    model: Any  # a fine-tune's model holds the tuned weights (the full step) until step() moves it
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    # A fine-tune's starting weights (the active model's) and tuned ones; None from scratch.
    start_weights: list[np.ndarray] | None = None
    tuned_weights: list[np.ndarray] | None = None

    def step(self, fraction: float) -> Any:
        """The model ``fraction`` of the way from the starting weights to the tuned ones (WiSE-FT)."""
        if self.start_weights is not None and self.tuned_weights is not None:
            self.model.set_weights(interpolate_weights(self.start_weights, self.tuned_weights, fraction))
        return self.model


def load_images(paths: Sequence[str], size: int, workers: int = 4) -> np.ndarray:
    """Decode and preprocess many files with the one shared preprocessing function.

    Preprocessed pixels are whole numbers in 0..255, so they are kept as uint8 (a quarter of
    the memory of float32) and cast batch by batch where they meet the model."""
    images = np.zeros((len(paths), size, size, 3), dtype=np.uint8)

    def load(index: int) -> None:
        images[index] = load_and_preprocess(paths[index], size)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(load, range(len(paths))))
    return images


def predict_batches(model: Any, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Softmax outputs of a Keras model for uint8 or float images, one float32 batch at a time."""
    parts = [
        np.asarray(model(x[i : i + batch_size].astype(np.float32), training=False))
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, model.output_shape[-1]), dtype=np.float32)


def interpolate_weights(start: list[np.ndarray], end: list[np.ndarray], fraction: float) -> list[np.ndarray]:
    """Weights ``fraction`` of the way from ``start`` to ``end`` (Wortsman et al. 2022, "Robust
    fine-tuning of zero-shot models": fine-tuned and starting weights of one network lie in one
    basin, and the models between them keep the start's answers better than the fine-tune alone).
    BatchNorm statistics are interpolated the same way."""
    if len(start) != len(end) or any(a.shape != b.shape for a, b in zip(start, end, strict=True)):
        raise ValueError("Weights of different networks cannot be interpolated.")
    return [(1.0 - fraction) * a + fraction * b for a, b in zip(start, end, strict=True)]


def _augmenter(seed: int) -> Any:
    """Geometry (small rotations, shifts, zoom out with borders) and site/scanner differences
    (brightness, contrast, blur). No horizontal flips: anatomy is not symmetric."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            layers.RandomRotation(0.03, fill_mode="constant", seed=seed),  # about ±10°
            layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed + 1),
            layers.RandomZoom((0.0, 0.12), fill_mode="constant", seed=seed + 2),  # zoom out: black borders
            layers.RandomBrightness(0.1, value_range=(0, 255), seed=seed + 3),
            layers.RandomContrast(0.2, seed=seed + 4),
            layers.RandomGaussianBlur(factor=0.5, kernel_size=3, sigma=1.0, value_range=(0, 255), seed=seed + 5),
        ],
        name="augment",
    )


def _gamma_and_noise(images: Any, seed: int) -> Any:
    """Per-image gamma in [0.7, 1.4] (another detector's response curve) and sensor noise."""
    import tensorflow as tf

    n = tf.shape(images)[0]
    gamma = tf.exp(tf.random.stateless_uniform([n, 1, 1, 1], seed=[seed, 1], minval=-0.36, maxval=0.34))
    images = 255.0 * tf.pow(tf.clip_by_value(images, 0.0, 255.0) / 255.0, gamma)
    sigma = tf.random.stateless_uniform([n, 1, 1, 1], seed=[seed, 2], minval=0.0, maxval=6.0)
    return images + sigma * tf.random.stateless_normal(tf.shape(images), seed=[seed, 3])


def _dataset(x: np.ndarray, y: np.ndarray, w: np.ndarray, batch_size: int, *, train: bool, seed: int) -> Any:
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y, w.astype(np.float32))).cache()
    if train:
        data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size).map(lambda images, labels, weights: (tf.cast(images, tf.float32), labels, weights))
    if train:
        augment = _augmenter(seed)
        data = data.enumerate().map(
            lambda step, batch: (
                tf.clip_by_value(
                    _gamma_and_noise(augment(batch[0], training=True), seed + tf.cast(step, tf.int32)), 0.0, 255.0
                ),
                batch[1],
                batch[2],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return data.prefetch(tf.data.AUTOTUNE)


def train_model(
    *,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: TrainConfig,
    w_train: np.ndarray | None = None,
    w_val: np.ndarray | None = None,
    initial_model: str | None = None,
    on_epoch_end: ProgressCallback | None = None,
) -> TrainResult:
    """Fit a fresh model, or fine-tune the .keras model at ``initial_model``; early stopping on the
    (weighted) validation loss restores the best weights. A fine-tune's result keeps its starting
    weights: ``TrainResult.step`` sets the model part of the way between them and the tuned ones.
    ``w_train``/``w_val``: per-case weights."""
    import keras
    import tensorflow as tf

    # Seeds alone leave CPU kernels free to reduce in any order; with op determinism the same
    # data, settings and seed give the same model (measured: no slower on 2 cores).
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    start_weights = None
    if initial_model is not None:
        model = keras.models.load_model(initial_model, compile=False)
        start_weights = model.get_weights()
        learning_rate, epochs = config.learning_rate * config.fine_tune_factor, config.fine_tune_epochs
    else:
        model = build_model(
            backbone=config.backbone,
            input_size=config.input_size,
            class_names=list(config.class_names),
            weights=config.weights,
        )
        learning_rate, epochs = config.learning_rate, config.epochs
    w_train = np.ones(len(y_train)) if w_train is None else w_train
    w_val = np.ones(len(y_val)) if w_val is None else w_val
    # A cosine schedule, not reduce-on-plateau: a weighted validation loss is noisy, and halving the
    # rate on every bump stalled training (measured: best epoch 2 of 12, accuracy 0.87).
    steps = max(1, -(-len(y_train) // config.batch_size)) * epochs
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.05)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    has_val = len(x_val) > 0
    monitor = "val_loss" if has_val else "loss"
    callbacks: list[Any] = [
        # The best weights are looked for after the first third of the epochs (a warm-up in which
        # a lucky validation loss on few, hard cases would otherwise win).
        keras.callbacks.EarlyStopping(
            monitor=monitor, patience=config.patience, restore_best_weights=True, start_from_epoch=epochs // 3
        ),
    ]
    if on_epoch_end is not None:
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: on_epoch_end(
                    epoch + 1, epochs, {k: float(v) for k, v in (logs or {}).items()}
                )
            )
        )
    fit = model.fit(
        _dataset(x_train, y_train, w_train, config.batch_size, train=True, seed=config.seed),
        validation_data=(
            _dataset(x_val, y_val, w_val, config.batch_size, train=False, seed=config.seed) if has_val else None
        ),
        epochs=epochs,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself, with the seed
        verbose=0,
    )
    history = {key: [float(v) for v in values] for key, values in fit.history.items() if key != "learning_rate"}
    monitored = history.get(monitor, [0.0])
    considered = monitored[epochs // 3 :] or monitored
    return TrainResult(
        model=model,
        history=history,
        epochs_run=len(monitored),
        best_epoch=len(monitored) - len(considered) + int(np.argmin(considered)) + 1,
        start_weights=start_weights,
        tuned_weights=model.get_weights() if start_weights is not None else None,
    )


def embeddings(model: Any, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The pooled features before the classifier, for the shortcut probe."""
    import keras

    return predict_batches(keras.Model(model.input, model.get_layer("embedding").output), x, batch_size)
