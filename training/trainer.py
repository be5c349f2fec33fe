"""Keras training on preprocessed arrays: tf.data with caching and augmentation,
class weights, early stopping, deterministic seeds. No Django imports."""

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

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "class_names": list(self.class_names)}


@dataclass
class TrainResult:
    model: Any
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int


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


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Inverse-frequency weights; classes absent from training get weight 1."""
    counts = np.bincount(labels, minlength=n_classes)
    total = counts.sum()
    return {i: float(total / (n_classes * c)) if c else 1.0 for i, c in enumerate(counts)}


def _augmenter(seed: int) -> Any:
    """Small rotations, shifts, brightness/contrast. No horizontal flips: anatomy is not symmetric."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            layers.RandomRotation(0.03, fill_mode="constant", seed=seed),  # about ±10°
            layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed + 1),
            layers.RandomBrightness(0.1, value_range=(0, 255), seed=seed + 2),
            layers.RandomContrast(0.15, seed=seed + 3),
        ],
        name="augment",
    )


def _dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, train: bool, seed: int) -> Any:
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if train:
        data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size).map(lambda images, labels: (tf.cast(images, tf.float32), labels))
    if train:
        augment = _augmenter(seed)
        data = data.map(
            lambda images, labels: (tf.clip_by_value(augment(images, training=True), 0.0, 255.0), labels),
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
    on_epoch_end: ProgressCallback | None = None,
) -> TrainResult:
    """Fit a fresh model; early stopping on validation loss restores the best weights."""
    import keras
    import tensorflow as tf

    # Seeds alone leave CPU kernels free to reduce in any order; with op determinism the same
    # data, settings and seed give the same model (measured: no slower on 2 cores).
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    model = build_model(
        backbone=config.backbone,
        input_size=config.input_size,
        class_names=list(config.class_names),
        weights=config.weights,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    has_val = len(x_val) > 0
    monitor = "val_loss" if has_val else "loss"
    callbacks: list[Any] = [
        keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5, patience=max(1, config.patience // 3)),
    ]
    if on_epoch_end is not None:
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: on_epoch_end(
                    epoch + 1, config.epochs, {k: float(v) for k, v in (logs or {}).items()}
                )
            )
        )
    fit = model.fit(
        _dataset(x_train, y_train, config.batch_size, train=True, seed=config.seed),
        validation_data=_dataset(x_val, y_val, config.batch_size, train=False, seed=config.seed) if has_val else None,
        epochs=config.epochs,
        class_weight=class_weights(y_train, len(config.class_names)),
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself, with the seed
        verbose=0,
    )
    history = {key: [float(v) for v in values] for key, values in fit.history.items() if key != "learning_rate"}
    monitored = history.get(monitor, [0.0])
    return TrainResult(
        model=model, history=history, epochs_run=len(monitored), best_epoch=int(np.argmin(monitored)) + 1
    )


def embeddings(model: Any, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The pooled features before the classifier, for the shortcut probe."""
    import keras

    return predict_batches(keras.Model(model.input, model.get_layer("embedding").output), x, batch_size)
