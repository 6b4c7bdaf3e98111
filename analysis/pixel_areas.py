"""Ground area of a raster's pixels, in square metres, for area tables.

Projected CRS: one area for every pixel, the map unit converted to metres (feet too). Geographic CRS (degrees): the
area of a pixel shrinks towards the poles, so each row gets its own, exact on the CRS's ellipsoid (the area of a
latitude–longitude quadrangle). Unknown CRS, or a rotated geographic grid: map units² only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..tiling.grid_match import srs_of
from ..tiling.source import RasterSource


@dataclass(frozen=True)
class PixelAreas:
    """``map_units2``: area of one pixel in map units² (degrees² in a geographic CRS); ``row_m2``: area of one pixel
    of each row in m² (``(height,)``), or None when the ground area is unknown."""

    map_units2: float
    row_m2: np.ndarray | None

    @property
    def uniform_m2(self) -> float | None:
        """The one area of every pixel in m² (a projected CRS), or None (unknown, or varying by row)."""
        if self.row_m2 is None or not np.allclose(self.row_m2, self.row_m2[0], rtol=1e-9, atol=0):
            return None
        return float(self.row_m2[0])

    def describe(self) -> str:
        """The pixel area for a report: "100 m²", "from 605 to 612 m² (by latitude)" or "… map units²"."""
        if self.row_m2 is None:
            return f"{self.map_units2:.6g} map units²"
        if self.uniform_m2 is not None:
            return f"{self.uniform_m2:.6g} m²"
        return f"from {float(self.row_m2.min()):.6g} to {float(self.row_m2.max()):.6g} m² (by latitude)"


def pixel_areas(source: RasterSource) -> PixelAreas:
    """The pixel areas of ``source`` (see the module docstring)."""
    g = source.geotransform
    map_units2 = abs(g[1] * g[5] - g[2] * g[4])
    srs = srs_of(source.projection)
    if srs is None or not source.georeferenced:
        return PixelAreas(map_units2, None)
    if srs.IsProjected():
        return PixelAreas(map_units2, np.full(source.height, map_units2 * srs.GetLinearUnits() ** 2))
    if srs.IsGeographic() and g[2] == 0 and g[4] == 0:
        radians = srs.GetAngularUnits()  # per unit of the CRS (a degree: π/180)
        edges = np.clip((g[3] + np.arange(source.height + 1) * g[5]) * radians, -np.pi / 2, np.pi / 2)
        width = abs(g[1]) * radians  # of longitude
        band = _authalic_q(edges, srs.GetSemiMajor(), srs.GetSemiMinor())
        return PixelAreas(map_units2, np.abs(np.diff(band)) * width)
    return PixelAreas(map_units2, None)


def _authalic_q(latitudes: np.ndarray, a: float, b: float) -> np.ndarray:
    """b²/2 · q(φ) at ``latitudes`` (radians): the area between two latitudes per radian of longitude is the
    difference of two values (m² for ``a``, ``b`` in metres)."""
    e = np.sqrt(max(1.0 - (b / a) ** 2, 0.0))
    s = np.sin(latitudes)
    if e < 1e-12:  # a sphere
        return b * b * s
    q = s / (1.0 - e * e * s * s) + np.arctanh(e * s) / e
    return b * b / 2.0 * q
