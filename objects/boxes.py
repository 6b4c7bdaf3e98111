"""Box arithmetic in pixels: intersection over union or over the smaller box, greedy non-maximum suppression, the
cores that own boxes.

Boxes are ``(K, 4)`` arrays ``x1, y1, x2, y2`` (x to the right, y down; x2 / y2 the far edges).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..tiling.box_overlap import intersections, iou_matrix


def centres(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of the boxes' centres (px)."""
    return (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2


def ios_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box's area, ``(K, M)``: 1 when one box lies inside the other, whatever their
    sizes (IoU is then small); 0 for boxes without area."""
    inter, area_a, area_b = intersections(a, b)
    smaller = np.minimum(area_a[:, None], area_b[None, :])
    return np.divide(inter, smaller, out=np.zeros_like(inter, dtype=np.float64), where=smaller > 0)


def duplicates(a: np.ndarray, b: np.ndarray, iou: float, ios: float | None = None) -> np.ndarray:
    """``(K, M)`` True where a box of ``a`` and one of ``b`` are one object: IoU > ``iou``, or, with ``ios`` set,
    intersection over the smaller box ≥ ``ios`` (a box nested in another, e.g. a crown part inside a crown)."""
    pairs = iou_matrix(a, b) > iou
    if ios is not None:
        pairs |= ios_matrix(a, b) >= ios
    return pairs


def same_class(a: np.ndarray, b: np.ndarray, agnostic: bool) -> np.ndarray:
    """``(K, M)`` True where labels ``a`` and ``b`` may suppress each other (always, when class-agnostic)."""
    if agnostic:
        return np.ones((len(a), len(b)), dtype=bool)
    return a[:, None] == b[None, :]


def nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float, agnostic: bool = False,
        ios: float | None = None) -> np.ndarray:
    """Indexes of the boxes greedy NMS keeps, best score first (ties: the earlier box): a box is dropped when a kept
    box of the same class (any class when ``agnostic``) is the same object (see :func:`duplicates`)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    overlaps = duplicates(boxes, boxes, iou, ios)
    overlaps &= same_class(labels, labels, agnostic)
    suppressed = np.zeros(len(scores), dtype=bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i]
    return np.asarray(keep, dtype=np.int64)


def core_bounds(starts: Sequence[int], tile: int, low: int, high: int) -> list[tuple[float, float]]:
    """Along one axis, the core ``[begin, end)`` of each tile (px): the tile less half the overlap on each side
    that a neighbour shares, clipped to the region ``[low, high)``. The cores split the region without gap or
    overlap, so every box centre in it has exactly one owner."""
    cuts = [(nxt + start + tile) / 2 for start, nxt in zip(starts, starts[1:], strict=False)]
    begins = [float(low), *cuts]
    ends = [*cuts, float(high)]
    return [(max(b, low), min(e, high)) for b, e in zip(begins, ends, strict=True)]


def overlapping(starts: Sequence[int], tile: int) -> list[list[int]]:
    """Along one axis, for each tile, the tiles (itself included) whose extents overlap its own."""
    return [[j for j, other in enumerate(starts) if other < start + tile and start < other + tile]
            for start in starts]
