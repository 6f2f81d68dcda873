"""Scores of a head on held-out records: per-class precision, recall, F1 and support, macro-F1, confusion matrices.

scikit-learn is imported where a head is scored (about 1.2 s): processes that only apply heads never pay it.
"""

from __future__ import annotations

import numpy as np


def import_sklearn() -> None:
    """Import ``sklearn.metrics`` now (before threads score heads: two threads importing it at once can deadlock on 3.11)."""
    import sklearn.metrics  # noqa: F401


def evaluate_multilabel(classes: list[str], y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Per-class precision/recall/F1/support, macro-F1, and each class's 2x2 confusion (raw and row-normalised)."""
    from sklearn.metrics import classification_report, f1_score, multilabel_confusion_matrix

    report = classification_report(y_true, y_pred, target_names=classes, output_dict=True, zero_division=0)
    cms = multilabel_confusion_matrix(y_true, y_pred)
    return {
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "accuracy": float((y_true == y_pred).all(axis=1).mean()) if len(y_true) else 0.0,  # exact set match
        "per_class": {c: {k: report[c][k] for k in ("precision", "recall", "f1-score", "support")} for c in classes},
        "confusion": {c: cm.tolist() for c, cm in zip(classes, cms, strict=True)},
        "confusion_normalized": {
            c: np.round(cm / np.maximum(cm.sum(axis=1, keepdims=True), 1), 4).tolist() for c, cm in zip(classes, cms, strict=True)
        },
    }


def evaluate(classes: list[str], y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Per-class precision/recall/F1/support, macro-F1, raw and row-normalised confusion matrices."""
    from sklearn.metrics import classification_report, confusion_matrix, f1_score

    labels = list(range(len(classes)))
    report = classification_report(y_true, y_pred, labels=labels, target_names=classes, output_dict=True, zero_division=0)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    return {
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "per_class": {c: {k: report[c][k] for k in ("precision", "recall", "f1-score", "support")} for c in classes},
        "confusion": cm.tolist(),
        "confusion_normalized": np.round(norm, 4).tolist(),
    }
