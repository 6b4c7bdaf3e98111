"""Object boxes for detection training data: a box layer read as pixel boxes, found per chip window, clipped.

Boxes are ``(K, 4)`` float64 arrays ``x1, y1, x2, y2`` in pixels of the raster (or of one image), x to the right,
y down, x2 / y2 the far edges (the detection contract of docs/model-package.md). A box is each feature's envelope.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from osgeo import ogr

from ..tiling.window import Window
from .errors import TrainingDataError
from .labels import class_table, normalise_value, value_of

ogr.UseExceptions()


@dataclass(frozen=True)
class BoxLabels:
    """The boxes of a box layer in raster pixels, their class values, the class table and what was skipped."""

    boxes: np.ndarray
    values: np.ndarray
    classes: list[dict]
    skipped_unlabelled: int = 0
    """Features without a class value or without a geometry."""


def pixel_envelope(wkb: bytes, geotransform: Sequence[float]) -> tuple[float, float, float, float] | None:
    """The envelope of a geometry (WKB in the raster's CRS) in pixels of a north-up raster; None for no geometry."""
    envelope = map_envelope(wkb)
    return None if envelope is None else envelope_pixels(envelope, geotransform)


def envelope_pixels(envelope: Sequence[float], geotransform: Sequence[float]) -> tuple[float, float, float, float]:
    """An envelope ``(xmin, xmax, ymin, ymax)`` in map units as ``(x1, y1, x2, y2)`` pixels of a north-up raster."""
    min_x, max_x, min_y, max_y = envelope
    g = geotransform
    cols = sorted(((min_x - g[0]) / g[1], (max_x - g[0]) / g[1]))
    rows = sorted(((min_y - g[3]) / g[5], (max_y - g[3]) / g[5]))
    return cols[0], rows[0], cols[1], rows[1]


def map_envelope(wkb: bytes) -> tuple[float, float, float, float] | None:
    """The envelope ``(xmin, xmax, ymin, ymax)`` of a geometry (WKB) in its own map units; None for no geometry."""
    geom = ogr.CreateGeometryFromWkb(bytes(wkb)) if wkb else None
    return None if geom is None or geom.IsEmpty() else geom.GetEnvelope()


def read_box_labels(features: Sequence[tuple[bytes, object]], geotransform: Sequence[float],
                    classes: Sequence[dict] | None = None, in_pixels: bool = True) -> BoxLabels:
    """Boxes (envelopes, raster pixels; or with ``in_pixels`` False :func:`map_envelope` in map units) and class
    values of ``(WKB in the raster's CRS, class attribute)`` pairs; the class table is ``classes`` checked against
    the attributes, or derived from them (names sorted → 0, 1, …; numbers keep their value)."""
    boxes, labels, skipped = [], [], 0
    for wkb, raw in features:
        label = normalise_value(raw)
        box = pixel_envelope(wkb, geotransform) if in_pixels else map_envelope(wkb)
        if label is None or box is None:
            skipped += 1
            continue
        boxes.append(box)
        labels.append(label)
    if not boxes:
        raise TrainingDataError(f"The layer has no feature with a geometry and a class value ({skipped} skipped). "
                                "Choose the layer's class field, or a layer with labelled features.")
    table = class_table(labels, classes, False)
    values = np.asarray([value_of(label, table) for label in labels], dtype=np.int64)
    return BoxLabels(np.asarray(boxes, dtype=np.float64), values, table, skipped)


def clip_boxes(boxes: np.ndarray, window: Window, min_visible: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The boxes seen in ``window``: (their indexes, the boxes clipped to the window in window pixels, whether each
    was clipped). A box is kept when at least ``min_visible`` (0–1) of its area lies inside the window and the part
    inside has an area."""
    if not len(boxes):
        return np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, bool)
    low = np.array([window.col_off, window.row_off] * 2, dtype=np.float64)
    high = np.array([window.col_end, window.row_end] * 2, dtype=np.float64)
    clipped = np.minimum(np.maximum(boxes, low), high)
    inner = (clipped[:, 2] - clipped[:, 0]).clip(0) * (clipped[:, 3] - clipped[:, 1]).clip(0)
    area = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    keep = np.flatnonzero((inner > 0) & (inner >= min_visible * area - 1e-9))
    moved = np.abs(clipped[keep] - boxes[keep]).max(axis=1) > 1e-9 if len(keep) else np.zeros(0, bool)
    return keep, clipped[keep] - low, moved


class BoxIndex:
    """Boxes bucketed on a grid of ``cell`` px, so the boxes touching a window are found without a scan of all."""

    def __init__(self, boxes: np.ndarray, cell: int) -> None:
        self.boxes, self.cell = boxes, max(int(cell), 1)
        self.buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
        first = np.floor(boxes[:, :2] / self.cell).astype(np.int64)
        last = np.floor(np.nextafter(boxes[:, 2:], -np.inf) / self.cell).astype(np.int64)
        for i, ((c0, r0), (c1, r1)) in enumerate(zip(first, np.maximum(last, first), strict=True)):
            for r in range(r0, r1 + 1):
                for c in range(c0, c1 + 1):
                    self.buckets[(c, r)].append(i)

    def near(self, window: Window) -> np.ndarray:
        """Indexes (sorted) of the boxes in the cells ``window`` touches: a superset of the boxes overlapping it."""
        c0, r0 = window.col_off // self.cell, window.row_off // self.cell
        c1, r1 = (window.col_end - 1) // self.cell, (window.row_end - 1) // self.cell
        found = {i for r in range(r0, r1 + 1) for c in range(c0, c1 + 1) for i in self.buckets.get((c, r), ())}
        return np.asarray(sorted(found), dtype=np.int64)


def oversized(boxes: np.ndarray, chip: int) -> np.ndarray:
    """Indexes of the boxes wider or taller than a chip of ``chip`` px (they can never be seen whole)."""
    return np.flatnonzero(((boxes[:, 2] - boxes[:, 0]) > chip) | ((boxes[:, 3] - boxes[:, 1]) > chip))
