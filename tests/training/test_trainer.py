"""The trainer: reproducible, weighted per case, warm-startable, reporting progress."""

import numpy as np
import pytest

from tests.images import xray_array
from training.trainer import TrainConfig, interpolate_weights, train_model

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


def test_case_weights_reach_the_fitted_loss_and_the_monitored_validation_loss():
    x, y = _data(12)
    config = TrainConfig(**{**CONFIG.as_dict(), "class_names": CLASSES, "epochs": 2})
    plain = train_model(x_train=x, y_train=y, x_val=x[:3], y_val=y[:3], config=config)
    val_weighted = train_model(
        x_train=x, y_train=y, x_val=x[:3], y_val=y[:3], config=config, w_val=np.array([10.0, 0.1, 0.1])
    )
    assert val_weighted.history["loss"] == plain.history["loss"]  # same fit
    assert val_weighted.history["val_loss"] != plain.history["val_loss"]  # another monitored loss
    train_weighted = train_model(
        x_train=x, y_train=y, x_val=x[:3], y_val=y[:3], config=config, w_train=np.r_[np.full(6, 3.0), np.zeros(6)]
    )
    assert train_weighted.history["loss"] != plain.history["loss"]


def test_a_warm_start_fine_tunes_the_given_model_with_its_own_epoch_budget(tmp_path):
    x, y = _data(12)
    first = train_model(x_train=x, y_train=y, x_val=x[:3], y_val=y[:3], config=CONFIG)
    path = tmp_path / "active.keras"
    first.model.save(path)
    config = TrainConfig(**{**CONFIG.as_dict(), "class_names": CLASSES, "fine_tune_epochs": 2, "patience": 5})
    tuned = train_model(x_train=x, y_train=y, x_val=x[:3], y_val=y[:3], config=config, initial_model=str(path))
    assert tuned.epochs_run == 2
    start = first.model.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(start, tuned.model.get_weights(), strict=True))
    assert tuned.model.count_params() == first.model.count_params()


def test_a_fine_tune_ends_its_interpolation_fraction_of_the_way_from_the_starting_weights(tmp_path):
    x, y = _data(12)
    first = train_model(x_train=x, y_train=y, x_val=x[:3], y_val=y[:3], config=CONFIG)
    path = tmp_path / "active.keras"
    first.model.save(path)
    start = first.model.get_weights()

    def tuned(fraction: float) -> list[np.ndarray]:
        config = TrainConfig(
            **{**CONFIG.as_dict(), "class_names": CLASSES, "fine_tune_epochs": 2, "fine_tune_interpolation": fraction}
        )
        return train_model(
            x_train=x, y_train=y, x_val=x[:3], y_val=y[:3], config=config, initial_model=str(path)
        ).model.get_weights()

    full, half, none = tuned(1.0), tuned(0.5), tuned(0.0)
    for a, f, h, n in zip(start, full, half, none, strict=True):
        np.testing.assert_array_equal(n, a)  # 0: the starting model itself
        np.testing.assert_allclose(h, (a + f) / 2, rtol=1e-5, atol=1e-6)  # the same deterministic fine-tune, half-way
    assert any(not np.array_equal(a, f) for a, f in zip(start, full, strict=True))


def test_weights_of_different_networks_are_not_interpolated():
    with pytest.raises(ValueError, match="different networks"):
        interpolate_weights([np.zeros(3)], [np.zeros(4)], 0.5)
