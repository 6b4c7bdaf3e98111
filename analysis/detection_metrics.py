"""Average precision of object detections, as COCO computes it: the one detection metric of Deep Raster (training
reports, benchmarks).

Per class, detections of all images are ranked by score; a detection is a true positive at IoU threshold t when it
overlaps (IoU ≥ t) a reference box of its class in its image that no better-scoring detection took (of several, the
one it overlaps most), else a false positive. AP is the area under the precision–recall curve made monotone,
sampled at COCO's 101 recall points 0, 0.01, …, 1. mAP@0.5 averages AP at IoU 0.5 over the classes with reference
boxes; mAP@[.5:.95] also averages over the thresholds 0.5, 0.55, …, 0.95. Boxes are ``x1, y1, x2, y2`` (any unit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..tiling.box_overlap import iou_matrix

THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
RECALL_POINTS = np.linspace(0.0, 1.0, 101)

box_overlaps = iou_matrix
"""``(len(a), len(b))`` intersection over union of two box arrays; 0 where a union has no area
(:func:`tiling.box_overlap.iou_matrix`)."""


def match(pred: np.ndarray, scores: np.ndarray, true: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """``(len(pred), len(thresholds))``: whether each detection (one image, one class) is a true positive at each
    threshold (greedy by score; ties: the earlier detection)."""
    hits = np.zeros((len(pred), len(thresholds)), dtype=bool)
    if not len(pred) or not len(true):
        return hits
    iou = iou_matrix(pred, true)
    order = np.lexsort((np.arange(len(scores)), -scores))
    for k, t in enumerate(thresholds):
        taken = np.zeros(len(true), dtype=bool)
        for i in order:
            candidates = np.where(~taken & (iou[i] >= t), iou[i], -1.0)
            j = int(np.argmax(candidates))
            if candidates[j] >= 0:
                taken[j] = hits[i, k] = True
    return hits


def precision_recall(scores: np.ndarray, hits: np.ndarray, n_true: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each detection ranked by score (one threshold's ``hits``)."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hits[order])
    fp = np.cumsum(~hits[order])
    return tp / np.maximum(tp + fp, 1), tp / max(n_true, 1)


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """COCO's 101-point interpolated AP of a precision–recall curve."""
    if not len(precision):
        return 0.0
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    return float(np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0).mean())


class DetectionScores:
    """Detections and reference boxes accumulated image by image; :meth:`result` gives AP per class and mAP.

    Args:
        values: the class values (labels) scored; detections and references of other labels are left out.
        names: their names (for the report).
    """

    def __init__(self, values: Sequence[int], names: Sequence[str] = ()) -> None:
        self.values = [int(v) for v in values]
        self.names = list(names) or [str(v) for v in self.values]
        self.scores: dict[int, list[np.ndarray]] = {v: [] for v in self.values}
        self.hits: dict[int, list[np.ndarray]] = {v: [] for v in self.values}
        self.n_true = dict.fromkeys(self.values, 0)
        self.images = 0

    def add(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, true_boxes: np.ndarray,
            true_labels: np.ndarray) -> None:
        """One image: its detections (boxes, scores, labels) and its reference boxes and labels."""
        boxes, true_boxes = np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(true_boxes, np.float64)
        scores, labels, true_labels = np.asarray(scores, np.float64), np.asarray(labels), np.asarray(true_labels)
        self.images += 1
        for v in self.values:
            mine, theirs = labels == v, true_boxes.reshape(-1, 4)[true_labels == v]
            self.n_true[v] += len(theirs)
            self.scores[v].append(scores[mine])
            self.hits[v].append(match(boxes[mine], scores[mine], theirs, THRESHOLDS))

    def result(self, curve_points: int = 200) -> dict[str, Any]:
        """``map_50``, ``map_50_95`` (None when no class has reference boxes), ``per_class`` (AP@0.5,
        AP@[.5:.95], reference and detected boxes, best recall) and ``pr_curves`` at IoU 0.5 (at most
        ``curve_points`` points each)."""
        per_class, curves = [], {}
        for v, name in zip(self.values, self.names, strict=True):
            scores = np.concatenate(self.scores[v]) if self.scores[v] else np.zeros(0)
            hits = np.concatenate(self.hits[v]) if self.hits[v] else np.zeros((0, len(THRESHOLDS)), bool)
            aps = []
            for k in range(len(THRESHOLDS)):
                precision, recall = precision_recall(scores, hits[:, k], self.n_true[v])
                aps.append(average_precision(precision, recall))
                if k == 0:
                    step = max(1, -(-len(precision) // curve_points))
                    curves[name] = {"precision": precision[::step].round(4).tolist(),
                                    "recall": recall[::step].round(4).tolist()}
                    best_recall = float(recall[-1]) if len(recall) else 0.0
            scored = self.n_true[v] > 0
            per_class.append({"class": name, "value": v, "reference_boxes": self.n_true[v], "detections": len(scores),
                              "ap_50": aps[0] if scored else None,
                              "ap_50_95": float(np.mean(aps)) if scored else None, "recall_max": best_recall})
        scored = [c for c in per_class if c["ap_50"] is not None]
        return {"images": self.images, "iou_thresholds": list(THRESHOLDS),
                "map_50": float(np.mean([c["ap_50"] for c in scored])) if scored else None,
                "map_50_95": float(np.mean([c["ap_50_95"] for c in scored])) if scored else None,
                "per_class": per_class, "pr_curves": curves}
