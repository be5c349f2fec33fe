"""The trainer: reproducible, weighted per case, warm-startable, reporting progress."""

from types import SimpleNamespace

import numpy as np
import pytest

from tests.images import xray_array
from training.trainer import TrainConfig, TrainResult, fine_tune_steps, interpolate_weights, train_model

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


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory) -> tuple[list[np.ndarray], TrainResult]:
    """An active model's weights and a 2-epoch fine-tune of it (each test sets the step it needs)."""
    x, y = _data(12)
    first = train_model(x_train=x, y_train=y, x_val=x[:3], y_val=y[:3], config=CONFIG)
    path = tmp_path_factory.mktemp("fine-tune") / "active.keras"
    first.model.save(path)
    config = TrainConfig(**{**CONFIG.as_dict(), "class_names": CLASSES, "fine_tune_epochs": 2})
    return first.model.get_weights(), train_model(
        x_train=x, y_train=y, x_val=x[:3], y_val=y[:3], config=config, initial_model=str(path)
    )


def test_a_fine_tune_can_be_set_any_fraction_of_the_way_from_the_starting_weights(fine_tuned):
    start, result = fine_tuned
    full = result.step(1.0).get_weights()
    half = result.step(0.5).get_weights()
    none = result.step(0.0).get_weights()
    for a, f, h, n in zip(start, full, half, none, strict=True):
        np.testing.assert_array_equal(n, a)  # 0: the starting model itself
        np.testing.assert_allclose(h, (a + f) / 2, rtol=1e-5, atol=1e-6)  # half-way
    assert any(not np.array_equal(a, f) for a, f in zip(start, full, strict=True))
    assert fine_tune_steps(0.5) == [1.0, 0.75, 0.5] and fine_tune_steps(0.6) == [1.0, 0.75, 0.6]


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [((False, True), 0.75), ((True,), 1.0), ((False, False), 0.5)],
    ids=["first-accepted-step", "full-step", "none-accepted-the-floor"],
)
def test_a_fine_tune_goes_the_largest_step_whose_validation_answers_the_gate_accepts(
    fine_tuned, monkeypatch, verdicts, expected
):
    from training.gate import GateDecision
    from training.services import runs
    from training.services.evaluations import SplitData

    start, result = fine_tuned
    full = result.tuned_weights
    x_val, y_val = _data(9, offset=50)
    val = SplitData(
        study_ids=list(range(9)), paths=[""] * 9, labels=y_val, patients=[f"p{i}" for i in range(9)], sources=["a"] * 9
    )
    config = TrainConfig(**{**CONFIG.as_dict(), "class_names": CLASSES, "fine_tune_interpolation": 0.5})
    monkeypatch.setattr(runs, "_score_active", lambda active, split, images: np.eye(3)[split.labels])
    answers, judged = iter(verdicts), []

    def gate(*, candidate, active, policy):
        judged.append((candidate.study_ids, active.decided.tolist()))
        return GateDecision(next(answers), "test")

    monkeypatch.setattr(runs, "gate_decide", gate)
    log = _Log()
    rule, step = runs._choose_step(result, config, val, x_val, SimpleNamespace(class_names=list(CLASSES)), log)

    assert step == expected
    assert judged[0] == (tuple(range(9)), y_val.tolist())  # the active model's answers on the same cases
    for a, f, w in zip(start, full, result.model.get_weights(), strict=True):
        np.testing.assert_allclose(w, a + expected * (f - a), rtol=1e-5, atol=1e-6)
    assert log.lines[-1] == f"Weights {expected:.2f} of the way from the active model's to the tuned ones"
    assert rule.temperature > 0


def test_without_an_active_model_to_compare_with_a_fine_tune_goes_its_floor(fine_tuned, monkeypatch):
    from training.services import runs
    from training.services.evaluations import SplitData

    start, result = fine_tuned
    full = result.tuned_weights
    x_val, y_val = _data(6, offset=50)
    val = SplitData(study_ids=list(range(6)), paths=[""] * 6, labels=y_val, patients=list("abcdef"), sources=["a"] * 6)
    monkeypatch.setattr(runs, "gate_decide", lambda **kw: pytest.fail("nothing to compare with"))
    _, step = runs._choose_step(result, CONFIG, val, x_val, None, _Log())
    assert step == CONFIG.fine_tune_interpolation
    np.testing.assert_allclose(result.model.get_weights()[0], start[0] + step * (full[0] - start[0]), atol=1e-6)


def test_weights_of_different_networks_are_not_interpolated():
    with pytest.raises(ValueError, match="different networks"):
        interpolate_weights([np.zeros(3)], [np.zeros(4)], 0.5)


def test_a_diverged_fit_fails_the_run_before_anything_is_registered(tiny_model_path):
    import keras

    from training.services.runs import TrainingError, weights_check_finite

    model = keras.models.load_model(tiny_model_path, compile=False)
    weights_check_finite(model)  # a sound model passes
    broken = model.get_weights()
    broken[-1] = np.full_like(broken[-1], np.nan)
    model.set_weights(broken)
    with pytest.raises(TrainingError, match="diverged"):
        weights_check_finite(model)
