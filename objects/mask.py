"""Mask polygons for Detect objects: objects are looked for only inside them.

A tile whose pixels all lie outside the polygons is not predicted, and a box is kept only when the pixel holding
its centre lies inside them. Inside means the pixel's centre lies in a polygon (GDAL's rasteriser, as the training
export's mask). The decision depends on the box alone, not on the tile that found it, so the exact cross-tile merge
is unchanged; the polygons are burnt once per strip of tiles (only those touching it are looked at).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from osgeo import ogr

from ..models.detectors import Detections
from ..tiling.burn import PolygonBurner
from ..tiling.errors import DeepRasterError
from ..tiling.grid_match import bounds, overlaps
from ..tiling.window import Window

ogr.UseExceptions()


class DetectionMask:
    """Mask polygons (WKB in the raster's CRS) over a raster with ``geotransform`` and ``projection``."""

    def __init__(self, polygons: Sequence[bytes], geotransform: Sequence[float], projection: str = "") -> None:
        shapes = []
        for wkb in polygons:
            geometry = ogr.CreateGeometryFromWkb(bytes(wkb)) if wkb else None
            if geometry is not None and geometry.GetDimension() == 2:
                shapes.append((geometry, 1))
        self._burner = PolygonBurner(shapes, projection)
        self._geotransform = tuple(float(v) for v in geotransform)
        self.count = self._burner.count

    def touches(self, region: Window) -> bool:
        """Whether any polygon's envelope meets ``region`` (a quick check before a run; map units)."""
        if self._burner.envelope is None:
            return False
        return overlaps(self._burner.envelope, bounds(self.window_transform(region), region.width, region.height))

    def window_transform(self, window: Window) -> tuple[float, ...]:
        """The geotransform of ``window``'s top-left pixel."""
        g = self._geotransform
        return (g[0] + window.col_off * g[1] + window.row_off * g[2], g[1], g[2],
                g[3] + window.col_off * g[4] + window.row_off * g[5], g[4], g[5])

    def inside(self, window: Window) -> np.ndarray:
        """(rows, cols) bool: the pixels of ``window`` whose centre lies in a polygon."""
        return self._burner.burn(self.window_transform(window), window.width, window.height, 0) == 1

    @staticmethod
    def keep(found: Detections, inside: np.ndarray) -> Detections:
        """The detections (tile pixels) whose centre pixel is inside (``inside`` of the same tile)."""
        if not len(found):
            return found
        rows, cols = inside.shape
        cx = np.clip(np.floor((found.boxes[:, 0] + found.boxes[:, 2]) / 2).astype(np.int64), 0, cols - 1)
        cy = np.clip(np.floor((found.boxes[:, 1] + found.boxes[:, 3]) / 2).astype(np.int64), 0, rows - 1)
        return found.select(inside[cy, cx])


def detection_mask(polygons: Sequence[bytes] | None, geotransform: Sequence[float], projection: str,
                   region: Window) -> DetectionMask | None:
    """The mask of a run (None without polygons); refused when no polygon reaches the region."""
    if polygons is None:
        return None
    mask = DetectionMask(polygons, geotransform, projection)
    if not mask.touches(region):
        raise DeepRasterError(f"No mask polygon lies inside the raster (or the extent): {len(polygons)} given, "
                              f"{mask.count} of them polygons. Check the mask layer (and its CRS), or leave the "
                              "mask out.")
    return mask
