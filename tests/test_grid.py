"""Unit tests of ``tiling.grid``: tile start positions and the tile grid (windows: tests/test_window_arithmetic.py).

The property tests state the grid contract of docs/architecture.md: every pixel of the region is covered, tiles
overlap regularly, the last tile is moved back inside the region, rasters smaller than a tile get one tile.
"""

from __future__ import annotations

import numpy as np
import pytest
from deepraster.tiling.grid import TileGrid, axis_starts, output_shape
from deepraster.tiling.panels import plan_panels
from deepraster.tiling.window import Window
from hypothesis import given, settings
from hypothesis import strategies as st

PROPERTY = settings(max_examples=150, deadline=None)
GRID_PROPERTY = settings(max_examples=40, deadline=None)


# --------------------------------------------------------------------------------------------------- axis_starts


def _coverage(starts: list[int], tile: int, start: int, length: int) -> np.ndarray:
    """How many tiles cover each pixel of ``[start, start + length)``."""
    count = np.zeros(length, dtype=int)
    for s in starts:
        lo, hi = max(s, start), min(s + tile, start + length)
        if hi > lo:
            count[lo - start:hi - start] += 1
    return count


@st.composite
def axis_cases(draw, aligns=(1,)) -> tuple[int, int, int, int, int, int]:
    """(start, length, tile, stride, offset, align) within the ranges the engine uses.

    With ``align`` > 1 the tile is a multiple of ``align`` (a model with output stride ``align`` needs that), the
    overlap is free, so the stride need not be a multiple of ``align``.
    """
    align = draw(st.sampled_from(aligns))
    tile = draw(st.integers(max(16, align), 1024)) // align * align
    overlap = draw(st.integers(0, tile // 2))
    stride = tile - overlap
    length = draw(st.integers(1, 5000))
    start = draw(st.integers(0, 3000))
    offset = draw(st.one_of(st.just(0), st.integers(0, stride - 1)))
    return start, length, tile, stride, offset, align


@PROPERTY
@given(axis_cases(aligns=(1, 8, 16, 32)))
def test_axis_starts_cover_every_pixel(case) -> None:
    """Every pixel of the region lies in at least one tile, for any region, tile, overlap, offset and align."""
    start, length, tile, stride, offset, align = case
    starts = axis_starts(start, length, tile, stride, offset, align)
    assert _coverage(starts, tile, start, length).min() >= 1


@PROPERTY
@given(axis_cases())
def test_axis_starts_increase_by_at_most_stride(case) -> None:
    """Starts strictly increase and consecutive tiles are at most ``stride`` apart (overlap is never lost)."""
    start, length, tile, stride, offset, align = case
    starts = axis_starts(start, length, tile, stride, offset, align)
    gaps = np.diff(starts)
    assert (gaps > 0).all()
    assert (gaps <= stride).all()


@PROPERTY
@given(axis_cases())
def test_axis_starts_without_offset_stay_inside(case) -> None:
    """With offset 0 and a region at least one tile long, no tile starts before the region and the last tile
    ends exactly at the region end (no padding needed); a shorter region gets exactly one tile."""
    start, length, tile, stride, _, _ = case
    starts = axis_starts(start, length, tile, stride, 0)
    if length >= tile:
        assert starts[0] == start
        assert min(starts) >= start
        assert starts[-1] + tile == start + length
    else:
        assert len(starts) == 1
        assert starts[0] <= start and starts[0] + tile >= start + length


@PROPERTY
@given(axis_cases(aligns=(8, 16, 32)))
def test_axis_starts_aligned_cover_and_align(case) -> None:
    """With ``align`` (a feature model's output stride) every start is a multiple of ``align`` from the region
    start, every pixel is still covered and consecutive tiles are at most ``stride`` apart (``align`` apart when
    the stride is below ``align``), for offset 0."""
    start, length, tile, stride, _, align = case
    starts = axis_starts(start, length, tile, stride, 0, align)
    assert all((s - start) % align == 0 for s in starts), starts
    assert _coverage(starts, tile, start, length).min() >= 1, starts
    assert (np.diff(starts) > 0).all() and (np.diff(starts) <= max(stride, align)).all(), starts
    if length >= tile:
        assert start + length <= starts[-1] + tile < start + length + align


@pytest.mark.parametrize(("length", "tile", "stride", "align"), [
    (220, 224, 192, 16),  # a region 4 px shorter than a ViT tile: centring by 2 px rounds the tile back by 16
    (62, 64, 64, 32),
])
def test_axis_starts_aligned_short_region_is_covered(length: int, tile: int, stride: int, align: int) -> None:
    """A region shorter than an aligned tile is still covered by its single tile (regression example)."""
    starts = axis_starts(0, length, tile, stride, 0, align)
    assert len(starts) == 1
    assert starts[0] <= 0 and starts[0] + tile >= length, f"tile {starts[0]}..{starts[0] + tile} misses 0..{length}"


def test_axis_starts_aligned_stride_not_multiple_of_align_is_covered() -> None:
    """With a stride that is no multiple of ``align`` (tile 64, overlap 14), starts stay aligned and rounding the
    last start up opens no gap (regression example: tiles at 0, 50, 128 leave pixels 114–127 uncovered)."""
    starts = axis_starts(0, 161, 64, 50, 0, 32)
    assert _coverage(starts, 64, 0, 161).min() >= 1, starts
    assert all(s % 32 == 0 for s in starts), starts


def test_axis_starts_examples() -> None:
    """Known layouts: regular stride, last tile shifted back inside, short region centred, half-stride offset."""
    assert axis_starts(0, 256, 256, 224) == [0]
    assert axis_starts(0, 480, 256, 224) == [0, 224]
    assert axis_starts(0, 500, 256, 224) == [0, 224, 244]
    assert axis_starts(10, 100, 256, 224) == [10 - 78]
    assert axis_starts(0, 500, 256, 224, offset=112) == [-112, 112, 336]


def test_axis_starts_rejects_bad_arguments() -> None:
    """Non-positive length, tile or stride are programming errors."""
    for args in ((0, 0, 256, 224), (0, 10, 0, 1), (0, 10, 256, 0)):
        with pytest.raises(ValueError):
            axis_starts(*args)


# --------------------------------------------------------------------------------------------------- TileGrid


@st.composite
def grid_cases(draw) -> tuple[Window, int, int, tuple[int, int]]:
    tile = draw(st.integers(16, 256))
    overlap = draw(st.integers(0, tile // 2))
    stride = tile - overlap
    region = Window(draw(st.integers(0, 500)), draw(st.integers(0, 500)),
                    draw(st.integers(1, 1500)), draw(st.integers(1, 1500)))
    offset = draw(st.one_of(st.just((0, 0)), st.tuples(st.integers(0, stride - 1), st.integers(0, stride - 1))))
    return region, tile, overlap, offset


@GRID_PROPERTY
@given(grid_cases())
def test_tile_grid_covers_region_in_row_major_order(case) -> None:
    """Every region pixel is covered; tiles come row-major with consecutive indexes and full tile size."""
    region, tile, overlap, offset = case
    grid = TileGrid(region, tile, overlap, offset)
    n_rows, n_cols = grid.shape
    tiles = list(grid)
    assert len(tiles) == len(grid) == n_rows * n_cols
    assert [t.index for t in tiles] == list(range(len(tiles)))
    assert [(t.grid_row, t.grid_col) for t in tiles] == [(r, c) for r in range(n_rows) for c in range(n_cols)]
    assert all(t.window.width == t.window.height == tile for t in tiles)
    rows = _coverage(grid.row_starts, tile, region.row_off, region.height)
    cols = _coverage(grid.col_starts, tile, region.col_off, region.width)
    assert rows.min() >= 1 and cols.min() >= 1  # the grid is a product: 2-D coverage is the outer product


@GRID_PROPERTY
@given(grid_cases())
def test_tile_grid_open_sides(case) -> None:
    """``open_sides`` is (top, bottom, left, right): open exactly where a neighbouring tile exists."""
    region, tile, overlap, offset = case
    grid = TileGrid(region, tile, overlap, offset)
    n_rows, n_cols = grid.shape
    for t in grid:
        assert t.open_sides == (t.grid_row > 0, t.grid_row < n_rows - 1, t.grid_col > 0, t.grid_col < n_cols - 1)


@GRID_PROPERTY
@given(grid_cases())
def test_tile_grid_strip_window_holds_its_row(case) -> None:
    """The strip window of a grid row is exactly the union footprint of that row's tiles."""
    region, tile, overlap, offset = case
    grid = TileGrid(region, tile, overlap, offset)
    for r in range(grid.shape[0]):
        strip = grid.strip_window(r)
        row = grid.row(r)
        assert all(t.window.intersection(strip) == t.window for t in row)
        assert strip.col_off == row[0].window.col_off and strip.col_end == row[-1].window.col_end
        assert strip.row_off == grid.row_starts[r] and strip.height == tile


def test_tile_grid_single_tile_for_small_raster() -> None:
    """A 100×60 region with 256 px tiles is one tile, centred, closed on every side."""
    grid = TileGrid(Window(0, 0, 100, 60), 256, 32)
    (tile,) = list(grid)
    assert tile.window == Window(-78, -98, 256, 256)
    assert tile.open_sides == (False, False, False, False)


def test_tile_grid_open_sides_example() -> None:
    """3×2 grid: corners and edges get the expected open sides."""
    grid = TileGrid(Window(0, 0, 400, 600), 256, 32)
    assert grid.shape == (3, 2)
    sides = {(t.grid_row, t.grid_col): t.open_sides for t in grid}
    assert sides[(0, 0)] == (False, True, False, True)
    assert sides[(1, 1)] == (True, True, True, False)
    assert sides[(2, 0)] == (True, False, False, True)


def test_tile_grid_rejects_empty_region_and_bad_overlap() -> None:
    """An empty region and an overlap outside [0, tile) raise ValueError."""
    with pytest.raises(ValueError, match="empty"):
        TileGrid(Window(0, 0, 0, 10), 64, 8)
    with pytest.raises(ValueError, match="overlap"):
        TileGrid(Window(0, 0, 10, 10), 64, 64)
    with pytest.raises(ValueError, match="overlap"):
        TileGrid(Window(0, 0, 10, 10), 64, -1)


# --------------------------------------------------------------------------------------------------- panels


@given(width=st.integers(1, 5000), tile=st.sampled_from([32, 64, 96]), overlap=st.sampled_from([0, 8, 16]),
       stride=st.sampled_from([1, 2, 4]), max_width=st.integers(0, 3000), col_off=st.integers(0, 50))
@settings(max_examples=150, deadline=None)
def test_panels_tile_the_output_columns(width, tile, overlap, stride, max_width, col_off) -> None:
    """Panels follow each other without gap, end on block edges (except the last), are at most the panel width
    (or 16 tiles) wide, and hold every tile of the whole grid that reaches them, with the whole grid's indices and
    open sides."""
    block = 16
    grid = TileGrid(Window(col_off, 0, width, 40), tile, overlap, align=stride)
    panels = plan_panels(grid, stride, block, max_width)
    out_cols = -(-width // stride)
    assert panels[0].col_off == 0 and panels[-1].col_end == out_cols
    widest = max(max_width, 16 * tile) // stride
    for a, b in zip(panels, panels[1:], strict=False):
        assert a.col_end == b.col_off and a.col_end % block == 0
    whole = {t.index: t for t in grid.row(0)}
    for p in panels:
        assert p.width <= max(widest // block, 1) * block or len(panels) == 1
        first, last = col_off + p.col_off * stride, min(col_off + p.col_end * stride, col_off + width)
        reaching = [t for t in whole.values() if t.window.col_off < last and t.window.col_end > first]
        assert p.grid.row(0) == reaching


# ------------------------------------------------------------------------------------ grids aligned to an output stride


def test_output_shape_and_grid_alignment() -> None:
    """Output size is ceil(region / stride); tile starts are multiples of the stride from the region origin,
    overlap is rounded up to keep the starts aligned, and misaligned tile sizes or offsets are refused."""
    assert output_shape(Window(3, 5, 100, 64), 16) == (4, 7)
    assert output_shape(Window(0, 0, 1, 1), 32) == (1, 1)
    grid = TileGrid(Window(7, 3, 500, 300), 64, 20, align=16)
    assert all((s - 7) % 16 == 0 for s in grid.col_starts)
    assert all((s - 3) % 16 == 0 for s in grid.row_starts)
    assert grid.step == 32 and grid.tile_size - grid.step == 32  # 64 − 20 = 44 → step rounded down to 32
    assert grid.col_starts[-1] + 64 >= 507 and grid.row_starts[-1] + 64 >= 303
    with pytest.raises(ValueError, match="multiples of align"):
        TileGrid(Window(0, 0, 100, 100), 60, 10, align=16)
    with pytest.raises(ValueError, match="multiples of align"):
        TileGrid(Window(0, 0, 100, 100), 64, 10, offset=(8, 0), align=16)


def test_first_row_reaching() -> None:
    """The resume point is the first grid row whose tiles reach the given raster row."""
    grid = TileGrid(Window(0, 10, 50, 400), 64, 16, align=16)  # starts 10, 58, 106, ...
    assert grid.first_row_reaching(10) == 0
    assert grid.first_row_reaching(73) == 0  # row 0 covers 10..73
    assert grid.first_row_reaching(74) == 1
    assert grid.first_row_reaching(10_000) == len(grid.row_starts)
