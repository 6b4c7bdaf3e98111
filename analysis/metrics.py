"""Classification metrics from one confusion matrix: the one implementation that evaluation, training and the
analysis reports share.

:class:`ConfusionMatrix` accumulates reference / predicted class values window by window (counts as int64, classes
by value, values equal to an ignore value left out), so memory never depends on the raster size.
:func:`class_scores` turns a matrix into per-class IoU, precision, recall, F1 and support, mIoU, overall accuracy
and Cohen's kappa, as a plain dict ready for JSON. The arithmetic follows scikit-learn's (``confusion_matrix``,
``precision_recall_fscore_support``, ``jaccard_score``, ``cohen_kappa_score``) operation for operation, so the
values are the same floats. Needs numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class ConfusionMatrix:
    """Pixel counts by (reference class, predicted class); rows: reference, columns: predicted.

    Classes are integer values (sorted); a value seen for the first time adds a row and a column. Pass ``classes``
    to fix the order and to list classes that may never occur (they get rows and columns of zeros).
    """

    def __init__(self, classes: Sequence[int] = (), ignore: int | None = None) -> None:
        self.classes = np.unique(np.asarray(list(classes), np.int64))
        self.ignore = ignore
        self.matrix = np.zeros((len(self.classes), len(self.classes)), np.int64)

    def _grow(self, values: np.ndarray) -> None:
        new = np.setdiff1d(values, self.classes)
        if not len(new):
            return
        classes = np.union1d(self.classes, new)
        matrix = np.zeros((len(classes), len(classes)), np.int64)
        at = np.searchsorted(classes, self.classes)
        matrix[np.ix_(at, at)] = self.matrix
        self.classes, self.matrix = classes, matrix

    def update(self, reference: np.ndarray, predicted: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add the pixels of one window: ``reference`` and ``predicted`` are integer class values of the same shape;
        pixels where ``valid`` is False, or whose reference or prediction equals ``ignore``, are not counted."""
        ref = np.asarray(reference).ravel()
        pred = np.asarray(predicted).ravel()
        if ref.shape != pred.shape:
            raise ValueError(f"reference ({ref.shape}) and predicted ({pred.shape}) differ in size")
        keep = np.ones(ref.shape, bool) if valid is None else np.asarray(valid, bool).ravel().copy()
        if self.ignore is not None:
            keep &= (ref != self.ignore) & (pred != self.ignore)
        ref, pred = ref[keep].astype(np.int64), pred[keep].astype(np.int64)
        if not len(ref):
            return
        self._grow(np.union1d(np.unique(ref), np.unique(pred)))
        k = len(self.classes)
        pairs = np.searchsorted(self.classes, ref) * k + np.searchsorted(self.classes, pred)
        self.matrix += np.bincount(pairs, minlength=k * k).reshape(k, k)

    def merge(self, other: ConfusionMatrix) -> None:
        """Add the counts of another matrix (e.g. of another window or worker)."""
        self._grow(other.classes)
        at = np.searchsorted(self.classes, other.classes)
        self.matrix[np.ix_(at, at)] += other.matrix

    @property
    def total(self) -> int:
        """Pixels counted."""
        return int(self.matrix.sum())

    def scores(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """:func:`class_scores` of this matrix; ``names`` in the order of :attr:`classes` (default: the values)."""
        return class_scores(self.matrix, self.classes.tolist(), names)


def confusion_matrix(reference: np.ndarray, predicted: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """The int64 confusion matrix of two arrays of class values for exactly ``classes`` (in that order); pairs with
    a value outside ``classes`` are not counted (as scikit-learn's ``confusion_matrix(labels=...)``)."""
    order = np.asarray(list(classes), np.int64)
    ref, pred = np.asarray(reference, np.int64).ravel(), np.asarray(predicted, np.int64).ravel()
    k = len(order)
    if not k:
        return np.zeros((0, 0), np.int64)
    sorter = np.argsort(order)
    ordered = order[sorter]

    def index(values: np.ndarray) -> np.ndarray:
        at = np.clip(np.searchsorted(ordered, values), 0, k - 1)
        return np.where(ordered[at] == values, sorter[at], -1)

    i, j = index(ref), index(pred)
    keep = (i >= 0) & (j >= 0)
    return np.bincount(i[keep] * k + j[keep], minlength=k * k).reshape(k, k).astype(np.int64)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator as float64, 0 where the denominator is 0 (scikit-learn's ``zero_division=0``)."""
    denominator = np.asarray(denominator, np.float64).copy()
    zero = denominator == 0
    denominator[zero] = 1.0
    result = np.asarray(numerator, np.float64) / denominator
    result[zero] = 0.0
    return result


def kappa(matrix: np.ndarray) -> float | None:
    """Cohen's kappa of a confusion matrix; None when undefined (no pixel, or chance agreement is certain)."""
    confusion = np.asarray(matrix, np.float64)
    k = confusion.shape[0]
    sum0, sum1 = confusion.sum(axis=0), confusion.sum(axis=1)
    total = sum0.sum()
    if total == 0:
        return None
    expected = np.outer(sum0, sum1) / total
    weights = np.ones((k, k), np.float64)
    np.fill_diagonal(weights, 0)
    denominator = np.sum(weights * expected)
    if denominator == 0:
        return None
    return float(1 - np.sum(weights * confusion) / denominator)


def class_scores(matrix: np.ndarray, classes: Sequence[int], names: Sequence[str] | None = None) -> dict[str, Any]:
    """Every metric of a confusion matrix (rows: reference, columns: predicted), as a JSON-ready dict.

    Per class: IoU (``tp / (tp + fp + fn)``), precision, recall, F1, support (reference pixels) and predicted
    pixels; 0 where a ratio has no pixel to divide by. ``miou`` and ``macro_f1`` average over the classes present
    in the reference (support > 0); ``overall_accuracy`` is the fraction of counted pixels on the diagonal;
    ``kappa`` is Cohen's kappa (None when undefined). Ratios are fractions 0–1, counts are pixels.
    """
    m = np.asarray(matrix, np.int64)
    classes = [int(c) for c in classes]
    labels = [str(n) for n in names] if names is not None else [str(c) for c in classes]
    if m.shape != (len(classes), len(classes)) or len(labels) != len(classes):
        raise ValueError(f"a {m.shape} matrix for {len(classes)} classes and {len(labels)} names")
    tp = np.diag(m)
    support, predicted = m.sum(axis=1), m.sum(axis=0)
    precision = _divide(tp, predicted)
    recall = _divide(tp, support)
    f1 = _divide(2.0 * tp.astype(np.float64), support.astype(np.float64) + predicted.astype(np.float64))
    iou = _divide(tp, support + predicted - tp)
    present = support > 0
    total = int(m.sum())
    return {
        "overall_accuracy": float(tp.sum() / total) if total else None,
        "kappa": kappa(m),
        "miou": float(np.mean(iou[present])) if present.any() else None,
        "macro_f1": float(np.mean(f1[present])) if present.any() else None,
        "per_class": [{"value": classes[i], "class": labels[i], "iou": float(iou[i]), "precision": float(precision[i]),
                       "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i]),
                       "predicted": int(predicted[i])} for i in range(len(classes))],
        "confusion_matrix": {"labels": labels, "values": classes, "rows": "reference", "columns": "predicted",
                             "matrix": m.tolist()},
        "n": total,
    }
