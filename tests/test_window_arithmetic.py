"""Unit tests of ``tiling.window``: the Window value object and its geotransform arithmetic.

Property tests (hypothesis) over north-up and rotated geotransforms: a window's geotransform puts its pixels where
the raster's are, a strided geotransform's pixels are every s-th pixel, map → pixel inverts pixel → map, and the
window of a map rectangle holds exactly the pixels it touches.
"""

from __future__ import annotations

import numpy as np
import pytest
from deepraster.tiling.window import (
    Window,
    inverse_geotransform,
    map_to_pixel,
    map_to_pixel_float,
    pixel_centres,
    strided_geotransform,
    window_from_bounds,
    window_geotransform,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from osgeo import gdal

PROPERTY = settings(max_examples=150, deadline=None)
NORTH_UP = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)


# --------------------------------------------------------------------------------------------------- Window


def test_window_ends_and_emptiness() -> None:
    """``col_end``/``row_end`` are exclusive ends; zero or negative sizes are empty."""
    w = Window(3, 5, 10, 7)
    assert (w.col_end, w.row_end) == (13, 12)
    assert not w.is_empty
    assert Window(0, 0, 0, 5).is_empty
    assert Window(0, 0, 5, 0).is_empty
    assert Window(0, 0, -1, 5).is_empty


def test_window_intersection_overlapping() -> None:
    """Two overlapping windows intersect in the common rectangle, whatever the order."""
    a, b = Window(0, 0, 10, 10), Window(4, 6, 10, 10)
    assert a.intersection(b) == Window(4, 6, 6, 4)
    assert b.intersection(a) == Window(4, 6, 6, 4)


def test_window_intersection_disjoint_and_touching_is_empty() -> None:
    """Disjoint or edge-touching windows have an empty intersection with zero (never negative) size."""
    a = Window(0, 0, 10, 10)
    touching = a.intersection(Window(10, 0, 5, 5))
    far = a.intersection(Window(50, 60, 5, 5))
    assert touching.is_empty and (touching.width, touching.height) == (0, 5)
    assert far.is_empty and (far.width, far.height) == (0, 0)


def test_window_relative_to_and_slices() -> None:
    """``relative_to`` moves the origin; ``slices`` index exactly the window's pixels of an array."""
    w = Window(12, 30, 4, 3)
    rel = w.relative_to(Window(10, 25, 100, 100))
    assert rel == Window(2, 5, 4, 3)
    grid = np.arange(20 * 20).reshape(20, 20)
    rows, cols = rel.slices()
    np.testing.assert_array_equal(grid[rows, cols], grid[5:8, 2:6])
    assert grid[rows, cols].shape == (3, 4)


def test_window_is_frozen() -> None:
    """Windows are immutable value objects (usable as dict keys)."""
    w = Window(1, 2, 3, 4)
    with pytest.raises(AttributeError):
        w.col_off = 5  # type: ignore[misc]
    assert {w: 1}[Window(1, 2, 3, 4)] == 1


windows = st.builds(Window, st.integers(-50, 50), st.integers(-50, 50), st.integers(0, 60), st.integers(0, 60))


@PROPERTY
@given(windows, windows)
def test_window_intersection_properties(a: Window, b: Window) -> None:
    """The intersection is commutative, lies in both windows, and holds exactly the common pixels."""
    i = a.intersection(b)
    assert i == b.intersection(a)
    assert i.width >= 0 and i.height >= 0
    mask_a, mask_b, mask_i = (np.zeros((200, 200), bool) for _ in range(3))
    for mask, w in ((mask_a, a), (mask_b, b), (mask_i, i)):
        if not w.is_empty:
            mask[w.relative_to(Window(-100, -100, 0, 0)).slices()] = True
    np.testing.assert_array_equal(mask_i, mask_a & mask_b)


# --------------------------------------------------------------------------------------------------- geotransforms


@st.composite
def geotransforms(draw, rotated: bool = True) -> tuple[float, ...]:
    """Well-conditioned geotransforms: pixel sizes 0.1–100 map units of either sign, rotation terms up to 30 % of
    them, origins within ±10⁶ map units."""
    size = st.floats(0.1, 100.0)
    dx, dy = draw(size) * draw(st.sampled_from([1, -1])), -draw(size) * draw(st.sampled_from([1, -1]))
    shear = st.floats(-0.3, 0.3) if rotated else st.just(0.0)
    x0, y0 = draw(st.floats(-1e6, 1e6)), draw(st.floats(-1e6, 1e6))
    return x0, dx, draw(shear) * abs(dy), y0, draw(shear) * abs(dx), dy


def _corner(gt, col, row) -> tuple[float, float]:
    """Map coordinates of pixel corner (col, row), straight from GDAL's definition."""
    return gdal.ApplyGeoTransform(list(gt), float(col), float(row))


pixels = st.integers(-500, 5000)
windows_on_raster = st.builds(Window, pixels, pixels, st.integers(1, 300), st.integers(1, 300))


@PROPERTY
@given(geotransforms(), windows_on_raster, st.integers(0, 300), st.integers(0, 300))
def test_window_geotransform_places_pixels_where_the_raster_has_them(gt, window: Window, col: int, row: int) -> None:
    """Corner (col, row) of the window's pixels is corner (col_off + col, row_off + row) of the raster's."""
    sub = window_geotransform(gt, window)
    assert sub[1:3] == gt[1:3] and sub[4:] == gt[4:]
    np.testing.assert_allclose(_corner(sub, col, row), _corner(gt, window.col_off + col, window.row_off + row),
                               rtol=0, atol=1e-6)


def test_window_geotransform_example() -> None:
    assert window_geotransform(NORTH_UP, Window(7, 3, 10, 10)) == (500070.0, 10.0, 0.0, 5799970.0, 0.0, -10.0)


@PROPERTY
@given(geotransforms(), st.integers(1, 32), st.integers(0, 200), st.integers(0, 200))
def test_strided_geotransform_pixels_are_every_stride_th_pixel(gt, stride: int, col: int, row: int) -> None:
    """Same origin; corner (col, row) of the strided grid is corner (col·s, row·s) of the fine one."""
    coarse = strided_geotransform(gt, stride)
    assert (coarse[0], coarse[3]) == (gt[0], gt[3])
    np.testing.assert_allclose(_corner(coarse, col, row), _corner(gt, col * stride, row * stride), rtol=0, atol=1e-6)
    assert strided_geotransform(gt, 1) == tuple(gt)


@PROPERTY
@given(geotransforms(), st.lists(st.tuples(pixels, pixels), min_size=1, max_size=20))
def test_map_to_pixel_of_pixel_centres_round_trips(gt, positions) -> None:
    """A pixel's centre lies in that pixel, for north-up and rotated rasters."""
    cols, rows = (np.array(v) for v in zip(*positions, strict=True))
    xy = pixel_centres(gt, cols, rows)
    assert xy.shape == (len(positions), 2)
    c, r = map_to_pixel(gt, xy[:, 0], xy[:, 1])
    assert c.dtype == r.dtype == np.int64
    assert c.tolist() == cols.tolist() and r.tolist() == rows.tolist()


@PROPERTY
@given(geotransforms(), st.floats(-1e6, 1e6), st.floats(-1e6, 1e6))
def test_map_to_pixel_float_is_gdal_inverse(gt, x: float, y: float) -> None:
    """Fractional pixel coordinates agree with GDAL's inverse geotransform, and map back to the same point."""
    col, row = map_to_pixel_float(gt, np.array([x]), np.array([y]))
    expected = gdal.ApplyGeoTransform(gdal.InvGeoTransform(gt), x, y)
    np.testing.assert_allclose([col[0], row[0]], expected, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(_corner(gt, col[0], row[0]), (x, y), rtol=0, atol=1e-6)


def test_map_to_pixel_floors_to_the_pixel_holding_the_point() -> None:
    """Points on a pixel's top-left edge belong to it; points just before belong to the previous pixel."""
    x0, y0 = NORTH_UP[0], NORTH_UP[3]
    c, r = map_to_pixel(NORTH_UP, np.array([x0, x0 + 10.0, x0 + 9.999, x0 - 0.001]),
                        np.array([y0, y0 - 10.0, y0 - 9.999, y0 + 0.001]))
    assert c.tolist() == [0, 1, 0, -1] and r.tolist() == [0, 1, 0, -1]


def test_inverse_geotransform_refuses_zero_pixel_size() -> None:
    assert inverse_geotransform(NORTH_UP) == (-50000.0, 0.1, 0.0, 580000.0, 0.0, -0.1)
    with pytest.raises(ValueError, match="cannot be inverted"):
        inverse_geotransform((0.0, 0.0, 0.0, 0.0, 0.0, -1.0))


@PROPERTY
@given(geotransforms(rotated=False), windows_on_raster)
def test_window_from_bounds_of_a_windows_extent_is_that_window(gt, window: Window) -> None:
    """The map extent of a window's pixel edges gives that window back (up to ``eps`` of rounding)."""
    (xa, ya), (xb, yb) = _corner(gt, window.col_off, window.row_off), _corner(gt, window.col_end, window.row_end)
    found = window_from_bounds(gt, min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb), eps=1e-6)
    assert found == window


@PROPERTY
@given(geotransforms(), windows_on_raster, st.floats(0.05, 0.95), st.floats(0.05, 0.95))
def test_window_from_bounds_holds_every_touched_pixel(gt, window: Window, fx: float, fy: float) -> None:
    """Rotated or not, the window holds the pixels of the rectangle's four corners and no column or row beyond
    their span; a point inside a pixel takes that one pixel."""
    corners = [_corner(gt, c, r) for c in (window.col_off + fx, window.col_end - fx)
               for r in (window.row_off + fy, window.row_end - fy)]
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    found = window_from_bounds(gt, min(xs), min(ys), max(xs), max(ys))
    cols, rows = map_to_pixel(gt, np.array(xs), np.array(ys))
    assert found.col_off <= cols.min() and cols.max() < found.col_end
    assert found.row_off <= rows.min() and rows.max() < found.row_end
    x, y = _corner(gt, window.col_off + fx, window.row_off + fy)
    assert window_from_bounds(gt, x, y, x, y) == Window(window.col_off, window.row_off, 1, 1)


def test_window_from_bounds_examples() -> None:
    """Edges on pixel edges take exactly those pixels (``eps`` absorbs rounding); inside pixels, every pixel
    touched; an empty rectangle an empty window."""
    x0, y0 = NORTH_UP[0], NORTH_UP[3]
    assert window_from_bounds(NORTH_UP, x0 + 100, y0 - 250, x0 + 300, y0 - 50) == Window(10, 5, 20, 20)
    assert window_from_bounds(NORTH_UP, x0 + 105, y0 - 245, x0 + 295, y0 - 55) == Window(10, 5, 20, 20)
    assert window_from_bounds(NORTH_UP, x0 - 500, y0 - 300, x0 + 200, y0 + 500) == Window(-50, -50, 70, 80)
    assert window_from_bounds(NORTH_UP, x0 + 99.99999999, y0 - 50, x0 + 110, y0 - 40) == Window(9, 4, 2, 1)
    assert window_from_bounds(NORTH_UP, x0 + 99.99999999, y0 - 50, x0 + 110, y0 - 40, eps=1e-6) == Window(10, 4, 1, 1)
    assert window_from_bounds(NORTH_UP, x0 + 100, y0 - 50, x0 + 100, y0 - 40).is_empty
