"""Reference features (points or polygons with a label and a group) → raster pixels to learn from or compare with.

QGIS-free: the Processing adapter turns a layer into :class:`ReferenceFeature` records already reprojected to the
raster's CRS (geometries as WKB); everything else — which pixels a feature gives, the seeded subset per polygon,
group codes, and counting what was skipped and why — happens here, so it is testable in plain Python.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from osgeo import ogr

from ..tiling.window import map_to_pixel, pixel_centres
from .errors import TrainingDataError
from .vector_pixels import polygon_pixels

OUTSIDE = "feature(s) outside the raster"
NO_LABEL = "feature(s) without label"
NO_GEOMETRY = "feature(s) without geometry"
NOT_REPROJECTABLE = "feature(s) not reprojectable"
ON_NODATA = "pixel(s) on nodata"


@dataclass(frozen=True)
class ReferenceFeature:
    """One feature of a reference layer, in the raster's CRS.

    Attributes:
        fid: feature id (the group of the feature's pixels when ``group`` is None; seeds its polygon subset).
        wkb: the geometry as WKB (None: no geometry).
        label: the label value (None: missing).
        group: the value of the group field as text (None: the feature is its own group).
        unusable: why the feature cannot be used although it has a geometry (one of the skip reasons), or None.
    """

    fid: int
    wkb: bytes | None
    label: object = None
    group: str | None = None
    unusable: str | None = None


@dataclass
class ReferencePixels:
    """Reference features turned into raster pixels: positions, labels, groups, values and what was skipped."""

    cols: np.ndarray
    rows: np.ndarray
    labels: np.ndarray  # object array (None when no label field)
    groups: np.ndarray  # int64: feature id, or code of the group field's value
    xy: np.ndarray  # (n, 2) pixel centres in the raster CRS
    values: np.ndarray | None = None  # (n, bands) float32, once read
    features_used: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def subset(self, keep: np.ndarray) -> ReferencePixels:
        """The pixels selected by ``keep`` (a boolean mask or indices); counts are kept."""
        return ReferencePixels(self.cols[keep], self.rows[keep], self.labels[keep], self.groups[keep], self.xy[keep],
                               None if self.values is None else self.values[keep], self.features_used, self.skipped)

    def skipped_text(self) -> str:
        """What was skipped, e.g. "2 feature(s) outside the raster; 5 pixel(s) on nodata" ("" when nothing)."""
        return "; ".join(f"{n} {why}" for why, n in self.skipped.items() if n)


def point_pixels(wkb: bytes, geotransform: Sequence[float], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (cols, rows) under the points of a point or multipoint geometry that fall inside the raster."""
    geom = ogr.CreateGeometryFromWkb(bytes(wkb))
    parts = [geom] if geom.GetGeometryCount() == 0 else [geom.GetGeometryRef(i)
                                                         for i in range(geom.GetGeometryCount())]
    points = [(p.GetX(), p.GetY()) for p in parts if not p.IsEmpty()]
    if not points:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    c, r = map_to_pixel(geotransform, np.array([p[0] for p in points]), np.array([p[1] for p in points]))
    inside = (c >= 0) & (c < size[0]) & (r >= 0) & (r < size[1])
    return c[inside], r[inside]


def reference_pixels(features: Iterable[ReferenceFeature], geotransform: Sequence[float], size: tuple[int, int],
                     points: bool, labelled: bool, per_polygon: int | None, seed: int, role: str,
                     is_cancelled: Callable[[], bool] = lambda: False) -> ReferencePixels:
    """Pixels of reference features inside a raster of ``size`` = (width, height) with ``geotransform``.

    Points give the pixel under them; polygons the pixel centres inside them, at most ``per_polygon`` per polygon
    (a random subset seeded by ``seed`` and the feature id: the same seed gives the same pixels). With
    ``labelled``, features without a label are skipped. Groups are feature ids, or codes of the group values in
    order of appearance.

    Raises:
        TrainingDataError: no feature gives a pixel inside the raster (the message says what was skipped).
    """
    cols, rows, labels, groups = [], [], [], []
    group_codes: dict[str, int] = {}
    skipped = {OUTSIDE: 0, NO_LABEL: 0, NO_GEOMETRY: 0, NOT_REPROJECTABLE: 0}
    used = total = 0
    for feature in features:
        if is_cancelled():
            break
        total += 1
        if labelled and feature.label is None:
            skipped[NO_LABEL] += 1
            continue
        if feature.unusable:
            skipped[feature.unusable] = skipped.get(feature.unusable, 0) + 1
            continue
        if not feature.wkb:
            skipped[NO_GEOMETRY] += 1
            continue
        if points:
            c, r = point_pixels(feature.wkb, geotransform, size)
        else:
            rng = np.random.default_rng([seed, feature.fid & 0xFFFFFFFF])
            c, r = polygon_pixels(feature.wkb, geotransform, size, per_polygon, rng)
        if c.size == 0:
            skipped[OUTSIDE] += 1
            continue
        used += 1
        group = int(feature.fid) if feature.group is None else group_codes.setdefault(feature.group, len(group_codes))
        cols.append(c)
        rows.append(r)
        labels += [feature.label] * c.size
        groups.append(np.full(c.size, group, np.int64))
    if used == 0:
        raise TrainingDataError(
            f"None of the {total} feature(s) of the {role} gives a pixel inside the raster "
            f"({', '.join(f'{n} {why}' for why, n in skipped.items() if n) or 'the layer is empty'}). Check that the "
            "layer covers the raster (layers in another CRS are reprojected to the raster's CRS) and, if a label "
            "field is used, that it is filled."
        )
    c, r = np.concatenate(cols), np.concatenate(rows)
    label_array = np.empty(len(labels), dtype=object)
    label_array[:] = labels
    return ReferencePixels(c, r, label_array, np.concatenate(groups), pixel_centres(geotransform, c, r), None, used,
                           skipped)
