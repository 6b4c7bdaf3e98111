"""Overlap of axis-aligned boxes: the one intersection-over-union that detection (``objects/``) and its evaluation
(``analysis/``) share.

Boxes are ``(K, 4)`` arrays ``x1, y1, x2, y2`` in any one unit (pixels in practice; x2 / y2 the far edges).
"""

from __future__ import annotations

import numpy as np


def intersections(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(K, M)`` intersection areas of every box of ``a`` with every box of ``b``, and the areas of ``a`` and ``b``
    (squared box units; a box with a negative side has no area)."""
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    return w * h, area_a, area_b


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of ``a`` (K, 4) with every box of ``b`` (M, 4): ``(K, M)`` float64,
    unitless 0–1; 0 where a union has no area."""
    inter, area_a, area_b = intersections(a, b)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter, dtype=np.float64), where=union > 0)
