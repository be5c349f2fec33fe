import numpy as np

from training.evaluation import evaluate_predictions, shortcut_check
from training.model_card import model_card_render

CLASSES = ["covid", "normal", "pneumonia"]


def _render(**overrides) -> str:
    arguments = {
        "name": "efficientnet-run1",
        "architecture": "efficientnetb0",
        "hyperparameters": {},
        "snapshot": None,
        "metrics": {},
        "shortcut": None,
        "comparison": None,
        "reproduce": "python manage.py train",
    }
    return model_card_render(**(arguments | overrides))


def test_model_card_states_research_use_and_shows_shortcut_warning():
    shortcut = {"warning": True, "reasons": ["no source contains more than one class"]}

    card = _render(shortcut=shortcut)

    assert card.startswith("# Model card: efficientnet-run1\n")
    assert "Research only, not a diagnostic device." in card
    assert "> ⚠ **Shortcut warning" in card
    assert "> - no source contains more than one class" in card


def test_model_card_shows_no_warning_block_when_shortcut_check_passes():
    card = _render(shortcut={"warning": False, "reasons": [], "source_probe_balanced_accuracy": 0.5})

    assert "⚠" not in card
    assert "No shortcut warning." in card
    assert "| Source probe balanced accuracy | 0.50 |" in card


def test_model_card_renders_with_empty_metrics():
    card = _render()

    assert "No snapshot recorded." in card
    assert "| Accuracy | n/a |" in card
    assert "Expected calibration error (15 bins): n/a" in card
    assert "No per-source results recorded." in card
    assert "## Shortcut check\n\nNot run." in card
    assert "Comparison with the active model" not in card


def test_model_card_formats_metrics_with_confidence_intervals():
    metrics = {
        "accuracy": 0.912,
        "macro_auc": None,
        "ci": {"accuracy": [0.851, 0.96], "per_class": {"covid": {"sensitivity": [0.7, 0.95]}}},
        "per_class": {"covid": {"support": 12, "sensitivity": 0.83, "specificity": 0.9}},
    }

    card = _render(metrics=metrics)

    assert "| Accuracy | 0.91 (0.85\u20130.96) |" in card
    assert "| Macro AUC (one vs rest) | n/a |" in card
    assert "| covid | 12 | 0.83 (0.70\u20130.95) | 0.90 | n/a | n/a | n/a |" in card


def test_model_card_renders_snapshot_counts_as_tables():
    snapshot = {
        "id": 7,
        "content_hash": "abc123",
        "counts": {
            "total": 30,
            "by_split": {"train": 20, "test": 10},
            "by_split_class": {"train": {"covid": 12, "normal": 8}, "test": {"covid": 10}},
        },
    }

    card = _render(snapshot=snapshot)

    assert "- Snapshot: 7" in card
    assert "- Content hash: `abc123`" in card
    assert "| train | 20 |" in card
    assert "| Split | covid | normal |" in card
    assert "| test | 10 | 0 |" in card


def test_model_card_compares_with_active_model():
    comparison = {
        "active_name": "old-model",
        "active_metrics": {"accuracy": 0.8},
        "promoted": True,
        "reason": "macro AUC improved",
    }

    card = _render(metrics={"accuracy": 0.9}, comparison=comparison)

    assert "Active model: old-model. Decision: **promoted** (macro AUC improved)." in card
    assert "| Accuracy | 0.90 | 0.80 |" in card


def test_model_card_states_known_limitations_and_temperature():
    card = _render(metrics={"temperature": 1.8})

    assert "## Known limitations" in card
    assert "Class and source are confounded" in card
    assert "Pediatric versus adult" in card
    assert "Temperature (fitted on the validation split): 1.80" in card


def test_model_card_puts_reproduce_text_in_a_code_block_it_cannot_close():
    card = _render(reproduce="echo ```\npython manage.py train")

    assert card.endswith("## How to reproduce\n\n````\necho ```\npython manage.py train\n````\n")


def test_model_card_renders_evaluation_and_shortcut_results():
    y = np.array([0, 0, 0] + [1, 2] * 5)
    sources = ["hannover"] * 3 + ["kaggle-pediatric"] * 10
    metrics = evaluate_predictions(
        y_true=y,
        probs=np.eye(3)[y],
        class_names=CLASSES,
        patients=[f"p{i}" for i in range(len(y))],
        sources=sources,
        bootstrap_rounds=20,
    )
    shortcut = shortcut_check(metrics=metrics, embeddings=None, y_true=y, sources=sources, class_names=CLASSES)

    card = _render(metrics=metrics, shortcut=shortcut)

    assert "13 test images" in card
    assert "| hannover | 3 | covid | 1.00 | n/a |" in card
    assert "| kaggle-pediatric | 10 | normal, pneumonia | 1.00 | 1.00 |" in card
    assert "| covid | 3 | 0 | 0 |" in card
    assert "> - class covid never has 5+ images" in card
