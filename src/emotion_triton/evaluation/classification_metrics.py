"""Classification metrics (scikit-learn) and the confusion-matrix picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def classification_metrics(y_true: list[int], y_pred: list[int], label_names: list[str]) -> dict:
    """Accuracy, weighted F1 (the model card's "F1 Score"), macro F1, per-class table, confusion matrix."""
    labels = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "samples": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_weighted": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "f1_macro": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(label_names)
        },
        "labels": list(label_names),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def format_metrics(metrics: dict) -> str:
    lines = [
        f"accuracy {metrics['accuracy']:.4f}   weighted F1 {metrics['f1_weighted']:.4f}   "
        f"macro F1 {metrics['f1_macro']:.4f}   ({metrics['samples']} texts)",
        f"{'class':>12} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}",
    ]
    for name, row in metrics["per_class"].items():
        lines.append(f"{name:>12} {row['precision']:9.4f} {row['recall']:7.4f} {row['f1']:7.4f} {row['support']:8d}")
    width = max(len(n) for n in metrics["labels"])
    lines.append("confusion matrix (rows: true, columns: predicted)")
    lines.append(" " * (width + 1) + " ".join(f"{n[:7]:>7}" for n in metrics["labels"]))
    for name, row in zip(metrics["labels"], metrics["confusion_matrix"], strict=True):
        lines.append(f"{name:>{width}} " + " ".join(f"{v:7d}" for v in row))
    return "\n".join(lines)


def plot_confusion_matrix(metrics: dict, path: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(metrics["confusion_matrix"])
    names = metrics["labels"]
    rows = matrix.sum(axis=1, keepdims=True).clip(min=1)
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.1 * len(names) + 1.5))
    ax.imshow(matrix / rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            share = matrix[i, j] / rows[i, 0]
            ax.text(j, i, f"{matrix[i, j]}", ha="center", va="center", color="white" if share > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\naccuracy {metrics['accuracy']:.2%}, weighted F1 {metrics['f1_weighted']:.2%}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
