"""Classification metrics from label vectors, vectorised with numpy: accuracy, macro F1, per-class table, confusion,
and from probabilities: macro one-vs-rest AUROC and expected calibration error (ECE, 15 equal-width bins).

Undefined cases give NaN (an empty split's accuracy, a class's precision when it is never predicted), never 0.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts; rows are the true class, columns the predicted class."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    if y_true.size and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float(np.mean(y_true == y_pred)) if y_true.size else float("nan")


def _prf(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(cm).astype(float)
    support = cm.sum(1).astype(float)
    predicted = cm.sum(0).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        recall = np.where(support > 0, tp / support, np.nan)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    # F1 is 0 when a present class is never hit, NaN when the class has neither support nor predictions.
    f1 = np.where((support == 0) & (predicted == 0), np.nan, np.where(np.isnan(denom), 0.0, f1))
    return precision, recall, f1, support


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean F1 over the classes present in y_true or y_pred (NaN when there are none)."""
    f1 = _prf(confusion(y_true, y_pred, num_classes))[2]
    return float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan")


def per_class(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, dict]:
    """{class name: {precision, recall, f1, support}} (NaN where undefined)."""
    precision, recall, f1, support = _prf(confusion(y_true, y_pred, len(classes)))
    return {str(c): {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                     "support": int(support[i])} for i, c in enumerate(classes)}


def macro_auroc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean over classes of the one-vs-rest ROC AUC (Mann-Whitney, ties counted half); classes with no positive
    or no negative image are left out; NaN when none is left."""
    from scipy.stats import rankdata

    y = np.asarray(y_true).astype(int)
    aucs = []
    for c in range(proba.shape[1]):
        pos = y == c
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        r = rankdata(proba[:, c])
        aucs.append((r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs)) if aucs else float("nan")


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, bins: int = 15) -> float:
    """Σ_b |B_b|/N · |accuracy(B_b) − mean confidence(B_b)| over equal-width confidence bins; NaN when empty."""
    y = np.asarray(y_true).astype(int)
    if y.size == 0:
        return float("nan")
    conf = proba.max(1)
    correct = (proba.argmax(1) == y).astype(float)
    b = np.minimum((conf * bins).astype(int), bins - 1)
    n = np.bincount(b, minlength=bins)
    gap = np.abs(np.bincount(b, correct, bins) - np.bincount(b, conf, bins))
    return float(gap.sum() / y.size) if n.sum() else float("nan")


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str],
                          proba: np.ndarray | None = None) -> dict:
    """One split's metrics as stored in the registry: accuracy, macro_f1, per_class, confusion (nested lists), n,
    and with probabilities auroc (macro one-vs-rest) and ece."""
    k = len(classes)
    out = {"n": int(np.asarray(y_true).size), "accuracy": accuracy(y_true, y_pred),
           "macro_f1": macro_f1(y_true, y_pred, k), "per_class": per_class(y_true, y_pred, classes),
           "confusion": confusion(y_true, y_pred, k).tolist()}
    if proba is not None:
        out["auroc"] = macro_auroc(y_true, proba)
        out["ece"] = expected_calibration_error(y_true, proba)
    return out
