"""The trainer: reproducible, weighted for imbalance, reporting progress."""

import numpy as np

from tests.images import xray_array
from training.trainer import TrainConfig, class_weights, train_model

CLASSES = ("covid", "normal", "pneumonia")


def _data(n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % 3
    images = [np.repeat(xray_array(size=32, label=CLASSES[y], seed=offset + i)[:, :, None], 3, axis=2) for i, y in
              enumerate(labels)]  # fmt: skip
    return np.stack(images).astype(np.float32), labels


CONFIG = TrainConfig(
    backbone="small_cnn", weights="none", input_size=32, epochs=3, batch_size=8,
    learning_rate=1e-3, patience=3, seed=3, class_names=CLASSES,
)  # fmt: skip


def test_the_same_seed_and_data_give_the_same_model():
    x, y = _data(24)
    xv, yv = _data(9, offset=100)
    first = train_model(x_train=x, y_train=y, x_val=xv, y_val=yv, config=CONFIG)
    second = train_model(x_train=x, y_train=y, x_val=xv, y_val=yv, config=CONFIG)
    assert first.history["val_loss"] == second.history["val_loss"]
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        assert np.array_equal(a, b)


def test_progress_is_reported_after_every_epoch():
    x, y = _data(12)
    seen = []
    train_model(x_train=x, y_train=y, x_val=x[:3], y_val=y[:3], config=CONFIG, on_epoch_end=lambda *a: seen.append(a))
    assert [(epoch, total) for epoch, total, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    assert {"loss", "val_loss", "accuracy"} <= set(seen[-1][2])


def test_rare_classes_weigh_more_and_absent_ones_do_not_break_training():
    weights = class_weights(np.array([0, 1, 1, 1, 1, 1]), 3)
    assert weights[0] == 5 * weights[1]
    assert weights[2] == 1.0
