"""Pixel windows and their geotransform arithmetic (as rasterio's ``windows`` module, on GDAL geotransforms).

A :class:`Window` is a rectangle of raster pixels; ``col``/``x`` grows to the right, ``row``/``y`` downwards. A
geotransform is GDAL's six numbers ``(x0, dx_col, dx_row, y0, dy_col, dy_row)``: pixel corner ``(col, row)`` lies at
map ``x = x0 + col·dx_col + row·dx_row``, ``y = y0 + col·dy_col + row·dy_row`` (map units of the raster's CRS).
The functions here are pure: they open no file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from osgeo import gdal

GeoTransform = tuple[float, ...]
"""GDAL's six geotransform numbers (see the module docstring)."""


@dataclass(frozen=True)
class Window:
    """A rectangle of pixels: offsets and size in pixels. Width or height 0 means empty."""

    col_off: int
    row_off: int
    width: int
    height: int

    @property
    def col_end(self) -> int:
        """First column after the window."""
        return self.col_off + self.width

    @property
    def row_end(self) -> int:
        """First row after the window."""
        return self.row_off + self.height

    @property
    def is_empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    def intersection(self, other: Window) -> Window:
        """The overlap of two windows (empty, with zero size, when they do not overlap)."""
        c0, r0 = max(self.col_off, other.col_off), max(self.row_off, other.row_off)
        c1, r1 = min(self.col_end, other.col_end), min(self.row_end, other.row_end)
        return Window(c0, r0, max(c1 - c0, 0), max(r1 - r0, 0))

    def relative_to(self, origin: Window) -> Window:
        """This window with offsets counted from ``origin``'s top-left corner."""
        return Window(self.col_off - origin.col_off, self.row_off - origin.row_off, self.width, self.height)

    def shifted(self, cols: int, rows: int) -> Window:
        """This window moved ``cols`` to the right and ``rows`` down (pixels)."""
        return Window(self.col_off + cols, self.row_off + rows, self.width, self.height)

    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices for indexing a ``(..., rows, cols)`` array anchored at (0, 0)."""
        return slice(self.row_off, self.row_end), slice(self.col_off, self.col_end)


def window_geotransform(geotransform: Sequence[float], window: Window) -> GeoTransform:
    """The geotransform of ``window``'s pixels: same pixel size and rotation, origin at the window's top-left
    corner (map units)."""
    g = geotransform
    return (g[0] + window.col_off * g[1] + window.row_off * g[2], g[1], g[2],
            g[3] + window.col_off * g[4] + window.row_off * g[5], g[4], g[5])


def strided_geotransform(geotransform: Sequence[float], stride: int) -> GeoTransform:
    """The geotransform of a grid ``stride`` times coarser with the same origin (a model's output at output stride
    ``stride``, or every ``stride``-th pixel): pixel size and rotation terms multiplied by ``stride``."""
    g = geotransform
    return g[0], g[1] * stride, g[2] * stride, g[3], g[4] * stride, g[5] * stride


def inverse_geotransform(geotransform: Sequence[float]) -> GeoTransform:
    """The geotransform mapping map coordinates back to (fractional) pixel coordinates.

    Raises ValueError when ``geotransform`` cannot be inverted (zero pixel size).
    """
    inverse = gdal.InvGeoTransform(tuple(geotransform))
    if inverse is None:
        raise ValueError(f"the geotransform {tuple(geotransform)} cannot be inverted (a pixel size is zero)")
    return tuple(inverse)


def map_to_pixel_float(geotransform: Sequence[float], x: np.ndarray,
                       y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates → fractional pixel coordinates ``(col, row)`` (float64; pixel corners at integers)."""
    inv = inverse_geotransform(geotransform)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return inv[0] + inv[1] * x + inv[2] * y, inv[3] + inv[4] * x + inv[5] * y


def map_to_pixel(geotransform: Sequence[float], x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates → integer pixel ``(col, row)`` holding them (int64; may lie outside the raster)."""
    col, row = map_to_pixel_float(geotransform, x, y)
    return np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)


def pixel_centres(geotransform: Sequence[float], cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Map coordinates ``(n, 2)`` (x, y) of the centres of pixels ``(cols, rows)``."""
    g = geotransform
    c, r = np.asarray(cols, np.float64) + 0.5, np.asarray(rows, np.float64) + 0.5
    return np.column_stack([g[0] + c * g[1] + r * g[2], g[3] + c * g[4] + r * g[5]])


def window_from_bounds(geotransform: Sequence[float], xmin: float, ymin: float, xmax: float, ymax: float,
                       eps: float = 0.0) -> Window:
    """The smallest window holding the pixel-space image of a map rectangle (not clipped to any raster).

    The four corners are mapped to pixel coordinates (so rotated geotransforms work); the window runs from their
    floor to their ceiling. ``eps`` (pixels) is a rounding tolerance: a bound within ``eps`` of a pixel edge does
    not take the pixel beyond it. The result may be empty (width or height ≤ 0).
    """
    cols, rows = map_to_pixel_float(geotransform, np.array([xmin, xmin, xmax, xmax]),
                                    np.array([ymin, ymax, ymin, ymax]))
    col_off, row_off = math.floor(cols.min() + eps), math.floor(rows.min() + eps)
    return Window(col_off, row_off, math.ceil(cols.max() - eps) - col_off, math.ceil(rows.max() - eps) - row_off)
