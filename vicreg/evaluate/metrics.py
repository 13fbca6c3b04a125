"""Scores from scikit-learn: quadratic weighted kappa (the primary score of graded labels,
DRAC22's metric), macro-F1 (the primary score of unordered classes: data.ordinal false),
accuracy, macro one-vs-one AUC on probabilities, per-class recall and the confusion matrix."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    recall_score,
    roc_auc_score,
)

METRICS = ("kappa", "f1", "accuracy", "auc")  # what scores() reports; kappa or f1 is a set's primary


def scores(y: np.ndarray, probs: np.ndarray) -> dict:
    """Metrics of class probabilities (N, C) against integer labels (N,). AUC: for two classes
    scikit-learn wants the positive class's probability (N,); for more, one-vs-one macro AUC
    on (N, C)."""
    n_classes = probs.shape[1]
    labels = list(range(n_classes))
    pred = probs.argmax(1)
    if len(np.unique(y)) == n_classes == 2:
        auc = float(roc_auc_score(y, probs[:, 1]))
    elif len(np.unique(y)) == n_classes:
        auc = float(roc_auc_score(y, probs, multi_class="ovo", average="macro", labels=labels))
    else:  # a class absent from these labels: its AUCs are undefined
        auc = float("nan")
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "kappa": float(cohen_kappa_score(y, pred, weights="quadratic", labels=labels)),
        "f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "auc": auc,
        "recall": recall_score(y, pred, labels=labels, average=None, zero_division=0).tolist(),
        "confusion": confusion_matrix(y, pred, labels=labels),
    }


def curve_scores(y: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """accuracy, quadratic kappa and macro-F1 of predicted labels (N,), from one confusion
    matrix: the per-epoch validation curve's numbers, the same as scikit-learn's
    (tests/vicreg/test_evaluate.py checks them against it) without its per-call input validation,
    which cost more than the head's training on small folds. Kappa: Cohen (1968), weights
    (i - j)^2 / (C - 1)^2."""
    c = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes).astype(float)
    n = c.sum()
    i, j = np.indices(c.shape)
    w = (i - j) ** 2 / max(1, n_classes - 1) ** 2
    expected = np.outer(c.sum(1), c.sum(0)) / n
    kappa = 1 - (w * c).sum() / (w * expected).sum() if (w * expected).sum() > 0 else float("nan")
    tp, pred_n, true_n = np.diag(c), c.sum(0), c.sum(1)
    f1 = np.divide(2 * tp, pred_n + true_n, out=np.zeros(n_classes), where=(pred_n + true_n) > 0)
    return {"accuracy": float(tp.sum() / n), "kappa": float(kappa), "f1": float(f1.mean())}


def mean_std(vals: list[float | None]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; nan for a single value), ignoring missing and non-finite
    values: over folds here, over seeds in the confirm stage."""
    a = np.array([v for v in vals if v is not None], dtype=float)
    a = a[np.isfinite(a)]
    if not len(a):
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else float("nan")
