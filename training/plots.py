"""PNG figures for a training run, drawn on `matplotlib.figure.Figure` (Agg, no pyplot global state)."""

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

FIGSIZE = (5, 4)
DPI = 100


def plot_training_curves(history: dict[str, list[float]], path: Path | str) -> None:
    """Loss and accuracy per epoch (training and validation) side by side."""
    fig = Figure(figsize=(2 * FIGSIZE[0], FIGSIZE[1]), dpi=DPI, layout="constrained")
    loss_ax, accuracy_ax = fig.subplots(1, 2)
    for ax, title, keys in (
        (loss_ax, "Loss", [key for key in history if key.endswith("loss")]),
        (accuracy_ax, "Accuracy", [key for key in history if "acc" in key]),
    ):
        for key in keys:
            ax.plot(range(1, len(history[key]) + 1), history[key], marker="o", markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("Epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(title.lower())
        ax.grid(alpha=0.3)
        if keys:
            ax.legend()
    fig.suptitle("Training curves")
    fig.savefig(path)


def plot_confusion_matrix(matrix: list[list[int]], class_names: list[str], path: Path | str) -> None:
    """Confusion matrix (rows true, columns predicted) annotated with counts."""
    counts = np.asarray(matrix)
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax)
    threshold = counts.max() / 2 if counts.size else 0
    for (row, column), count in np.ndenumerate(counts):
        ax.text(column, row, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=30, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title("Confusion matrix")
    fig.savefig(path)


def plot_roc(
    roc: dict[str, dict[str, list[float]]], path: Path | str, aucs: dict[str, float | None] | None = None
) -> None:
    """One-vs-rest ROC curve per class (classes with an empty curve are left out) and the chance diagonal."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    for name, curve in roc.items():
        if curve["fpr"]:
            auc = (aucs or {}).get(name)
            label = name if auc is None else f"{name} (AUC {auc:.2f})"
            ax.plot(curve["fpr"], curve["tpr"], label=label)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("False positive rate (1 - specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title("ROC curves (one vs rest)")
    ax.legend(loc="lower right")
    fig.savefig(path)


def plot_reliability(calibration: dict, path: Path | str) -> None:
    """Reliability diagram from `evaluate_predictions(...)["calibration"]`, ECE in the title."""
    reliability = calibration.get("reliability", {})
    confidence = reliability.get("bin_confidence", [])
    accuracy = reliability.get("bin_accuracy", [])
    ece = calibration.get("ece")
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.bar(confidence, accuracy, width=1 / 15, alpha=0.7, edgecolor="black", label="accuracy per bin")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("Confidence (max probability)")
    ax.set_ylabel("Accuracy")
    ax.set_title("Reliability diagram (ECE n/a)" if ece is None else f"Reliability diagram (ECE {ece:.3f})")
    ax.legend(loc="upper left")
    fig.savefig(path)
