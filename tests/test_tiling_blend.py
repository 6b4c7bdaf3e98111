"""Unit tests of ``tiling.weights`` (tile weights) and ``tiling.blend`` (the strip blender, at any output stride).

They prove the blending contract: weights never vanish, borders of the region keep full weight, Hann ramps of
neighbours form a partition of unity, and the weighted mean reproduces any prediction that the tiles agree on
(a constant, a linear field) exactly, with a buffer of one tile height.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from deepraster.tiling.blend import Chunk, StripBlender
from deepraster.tiling.grid import Tile, TileGrid, output_shape
from deepraster.tiling.weights import tile_weights
from deepraster.tiling.window import Window
from hypothesis import given, settings
from hypothesis import strategies as st

SIDES = st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans())

# --------------------------------------------------------------------------------------------------- tile_weights


@settings(max_examples=60, deadline=None)
@given(st.integers(8, 300), st.data(), SIDES, st.sampled_from(["hann", "centre_crop"]))
def test_tile_weights_never_zero_and_at_most_one(size: int, data, sides, method: str) -> None:
    """Weights are float32, strictly positive everywhere and at most 1, for any open sides."""
    overlap = data.draw(st.integers(0, size // 2))
    w = tile_weights(size, overlap, sides, method)
    assert w.shape == (size, size) and w.dtype == np.float32
    assert w.min() > 0
    assert w.max() <= 1.0


@pytest.mark.parametrize("method", ["hann", "centre_crop"])
def test_tile_weights_single_tile_is_one_everywhere(method: str) -> None:
    """A tile with no neighbour (one tile covers the region) has weight 1 everywhere: no zero border."""
    w = tile_weights(64, 16, (False, False, False, False), method)
    np.testing.assert_array_equal(w, np.ones((64, 64), np.float32))


def test_tile_weights_closed_sides_keep_full_weight() -> None:
    """On a closed side the profile stays 1 up to the edge; only open sides taper."""
    size, overlap = 64, 16
    only_top_open = tile_weights(size, overlap, (True, False, False, False))
    np.testing.assert_array_equal(only_top_open[overlap:], 1.0)  # bottom, left and right edges at full weight
    assert only_top_open[0, 0] < 0.01 and only_top_open[overlap - 1, 0] > 0.99
    only_right_open = tile_weights(size, overlap, (False, False, False, True))
    np.testing.assert_array_equal(only_right_open[:, : size - overlap], 1.0)
    np.testing.assert_array_equal(only_right_open[0], only_right_open[size // 2])  # rows identical: no top taper


def test_tile_weights_hann_ramp_formula() -> None:
    """An open side rises as sin²(π/2 · (i + ½) / overlap) over ``overlap`` pixels, then stays at 1."""
    size, overlap = 40, 10
    w = tile_weights(size, overlap, (False, False, True, False))
    ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
    np.testing.assert_allclose(w[5, :overlap], ramp, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(w[5, overlap:], 1.0)
    np.testing.assert_array_equal(w[:, 3], w[0, 3])  # constant along the untapered axis


@settings(max_examples=60, deadline=None)
@given(st.integers(16, 512), st.data())
def test_tile_weights_hann_partition_of_unity(size: int, data) -> None:
    """Two horizontal neighbours with regular overlap: their ramps sum to 1 across the overlap (and with four
    tiles meeting at a corner the 2-D weights sum to 1 too)."""
    overlap = data.draw(st.integers(1, size // 2))
    stride = size - overlap
    left = tile_weights(size, overlap, (False, False, False, True))
    right = tile_weights(size, overlap, (False, False, True, False))
    np.testing.assert_allclose(left[:, stride:] + right[:, :overlap], 1.0, rtol=0, atol=1e-5)
    tl = tile_weights(size, overlap, (False, True, False, True))
    tr = tile_weights(size, overlap, (False, True, True, False))
    bl = tile_weights(size, overlap, (True, False, False, True))
    br = tile_weights(size, overlap, (True, False, True, False))
    corner = tl[stride:, stride:] + tr[stride:, :overlap] + bl[:overlap, stride:] + br[:overlap, :overlap]
    np.testing.assert_allclose(corner, 1.0, rtol=0, atol=1e-5)


def test_tile_weights_centre_crop_keeps_centre() -> None:
    """centre_crop: full weight in the centre, (near) zero in the half-overlap margins of open sides only."""
    size, overlap = 64, 16
    w = tile_weights(size, overlap, (True, True, True, True), "centre_crop")
    half = overlap // 2
    np.testing.assert_array_equal(w[half:-half, half:-half], 1.0)
    assert w[:half].max() <= 1e-6 and w[:, -half:].max() <= 1e-6
    closed_left = tile_weights(size, overlap, (True, True, False, True), "centre_crop")
    np.testing.assert_array_equal(closed_left[half:-half, : size - half], 1.0)


def test_tile_weights_unknown_method() -> None:
    """An unknown blending method is refused with a message naming the choices."""
    with pytest.raises(ValueError, match="hann"):
        tile_weights(64, 8, (False,) * 4, "gaussian")


def test_tile_weights_are_read_only() -> None:
    """Cached profiles cannot be corrupted by a caller writing into the returned weights."""
    w = tile_weights(32, 8, (True, True, True, True))
    w[:] = 0  # the returned array is a fresh copy
    assert tile_weights(32, 8, (True, True, True, True)).min() > 0


# --------------------------------------------------------------------------------------------------- StripBlender


def _blend(grid: TileGrid, channels: int, predict: Callable[[Tile], np.ndarray],
           valid: Callable[[Tile], np.ndarray] | None = None, skip_rows: frozenset[int] = frozenset(),
           method: str = "hann", blender: StripBlender | None = None) -> tuple[np.ndarray, np.ndarray, list[Chunk]]:
    """Drive a blender (by default a new one, without stride) the way the engine does; return the assembled values,
    validity and the chunks."""
    blender = blender or StripBlender(grid, channels, method)
    region = grid.region
    chunks: list[Chunk] = []
    for r in range(grid.shape[0]):
        if r in skip_rows:
            continue
        chunks += blender.release_until(grid.row_starts[r])
        for tile in grid.row(r):
            ok = valid(tile) if valid else np.ones((grid.tile_size,) * 2, bool)
            blender.add(tile, predict(tile), ok)
    chunks += blender.release_until(region.row_end)
    values = np.concatenate([c.values for c in chunks], axis=1)
    mask = np.concatenate([c.valid for c in chunks], axis=0)
    assert values.shape == (channels, *output_shape(region, blender.stride))
    assert [c.row_off for c in chunks] == list(np.cumsum([0] + [c.valid.shape[0] for c in chunks[:-1]]))
    return values, mask, chunks


@st.composite
def blend_grids(draw) -> TileGrid:
    tile = draw(st.integers(16, 96))
    overlap = draw(st.integers(0, tile // 2))
    region = Window(draw(st.integers(0, 40)), draw(st.integers(0, 40)),
                    draw(st.integers(1, 300)), draw(st.integers(1, 300)))
    offset = draw(st.one_of(st.just((0, 0)), st.tuples(st.integers(0, tile - overlap - 1),
                                                         st.integers(0, tile - overlap - 1))))
    return TileGrid(region, tile, overlap, offset)


@settings(max_examples=40, deadline=None)
@given(blend_grids(), st.sampled_from(["hann", "centre_crop"]))
def test_blender_constant_is_exact(grid: TileGrid, method: str) -> None:
    """Blending constant predictions gives the constant back everywhere (borders, irregular last tiles)."""
    consts = np.array([0.3, 7.25], np.float32)
    size = grid.tile_size
    values, mask, _ = _blend(grid, 2, lambda t: np.broadcast_to(consts[:, None, None], (2, size, size)),
                             method=method)
    assert mask.all()
    np.testing.assert_allclose(values[0], 0.3, rtol=0, atol=1e-6)
    np.testing.assert_allclose(values[1], 7.25, rtol=0, atol=1e-5)


def _ramp(window: Window) -> np.ndarray:
    """The linear field f(row, col) = 0.002·col − 0.003·row + 0.5 over ``window`` (any position, also off-raster)."""
    rows, cols = np.mgrid[window.row_off:window.row_end, window.col_off:window.col_end].astype(np.float64)
    return (0.002 * cols - 0.003 * rows + 0.5).astype(np.float32)[None]


@settings(max_examples=40, deadline=None)
@given(blend_grids())
def test_blender_reproduces_linear_field(grid: TileGrid) -> None:
    """A field predicted tile by tile (each tile sees the true field over its window) is reproduced exactly:
    blending does not distort a consistent signal, at borders and in irregular overlaps alike."""
    values, mask, _ = _blend(grid, 1, lambda t: _ramp(t.window))
    assert mask.all()
    np.testing.assert_allclose(values, _ramp(grid.region), rtol=0, atol=2e-6)


def test_blender_buffer_is_one_tile_high() -> None:
    """The accumulators hold one tile height of rows, whatever the region height (memory does not grow)."""
    for height in (10, 300, 20000):
        grid = TileGrid(Window(0, 0, 50, height), 64, 16)
        blender = StripBlender(grid, 3)
        assert blender.sums.shape == (3, 64, 50)
        assert blender.weights.shape == blender.valid.shape == (64, 50)


def test_blender_releases_rows_in_bounded_chunks() -> None:
    """Chunks never exceed the buffer height, come in order and together hold every region row once."""
    grid = TileGrid(Window(3, 5, 70, 500), 32, 8)
    _, mask, chunks = _blend(grid, 1, lambda t: _ramp(t.window))
    assert max(c.valid.shape[0] for c in chunks) <= 32
    assert sum(c.valid.shape[0] for c in chunks) == 500 and mask.all()


def test_blender_skipped_grid_rows_come_out_invalid() -> None:
    """Grid rows with no tile added (skipped as nodata) are released as invalid rows, not an error, also when
    the gap is taller than the buffer; rows reached by a neighbouring grid row keep its values."""
    grid = TileGrid(Window(0, 0, 40, 400), 32, 8)  # row starts 0, 24, 48, ..., 368
    skipped = frozenset({1, 2, 3, 4, 5, 6})  # rows 24..175 only partly reached by grid rows 0 and 7
    values, mask, _ = _blend(grid, 1, lambda t: _ramp(t.window), skip_rows=skipped)
    first_skipped_top, next_kept_top = grid.row_starts[1], grid.row_starts[7]
    assert mask[:32].all()  # grid row 0 covers rows 0..31
    assert not mask[32:next_kept_top].any()  # nothing reached rows 32..167
    assert mask[next_kept_top:].all()
    assert first_skipped_top < 32
    np.testing.assert_allclose(values[:, mask], _ramp(grid.region)[:, mask], atol=2e-6)


def test_blender_release_until_past_skipped_rows_directly() -> None:
    """``release_until`` far below the buffer (no tile added in between) returns invalid zero rows."""
    grid = TileGrid(Window(0, 0, 10, 300), 16, 4)
    blender = StripBlender(grid, 2)
    chunks = blender.release_until(100)
    assert sum(c.valid.shape[0] for c in chunks) == 100
    assert all(not c.valid.any() and not c.values.any() for c in chunks)
    assert blender.release_until(50) == []  # rows already released: nothing more
    rest = blender.release_until(10_000)  # clipped to the region end
    assert sum(c.valid.shape[0] for c in rest) == 200 and rest[0].row_off == 100


def test_blender_input_validity_is_kept() -> None:
    """Pixels invalid in the input stay invalid after blending, the others valid."""
    grid = TileGrid(Window(0, 0, 90, 90), 32, 8)
    holes = np.zeros((200, 200), bool)
    holes[40:50, 10:70] = True

    def valid(tile: Tile) -> np.ndarray:
        w = tile.window
        return ~holes[w.row_off + 50:w.row_end + 50, w.col_off + 50:w.col_end + 50]

    _, mask, _ = _blend(grid, 1, lambda t: _ramp(t.window), valid=valid)
    np.testing.assert_array_equal(mask, ~holes[50:140, 50:140])


def test_blender_ignores_tiles_outside_region() -> None:
    """A tile that does not touch the region adds nothing."""
    grid = TileGrid(Window(0, 0, 20, 20), 16, 4)
    blender = StripBlender(grid, 1)
    outside = Tile(99, 0, 0, Window(100, 100, 16, 16), (False,) * 4)
    blender.add(outside, np.ones((1, 16, 16), np.float32), np.ones((16, 16), bool))
    assert not blender.weights.any() and not blender.sums.any()


# --------------------------------------------------------------------------------------------------- strided blender


@st.composite
def strided_grids(draw) -> tuple[TileGrid, int]:
    stride = draw(st.sampled_from([2, 4, 8, 16]))
    tile = stride * draw(st.integers(2, 12))
    overlap = draw(st.integers(0, tile // 2))
    region = Window(draw(st.integers(0, 30)), draw(st.integers(0, 30)), draw(st.integers(1, 260)),
                    draw(st.integers(1, 260)))
    return TileGrid(region, tile, overlap, align=stride), stride


def _out_ramp(window: Window) -> np.ndarray:
    rows, cols = np.mgrid[window.row_off:window.row_end, window.col_off:window.col_end].astype(np.float64)
    return (0.01 * cols - 0.02 * rows + 0.5).astype(np.float32)[None]


@settings(max_examples=50, deadline=None)
@given(strided_grids())
def test_strided_blender_reproduces_constant_and_linear_fields(case) -> None:
    """At any stride, tile and overlap, blending tile outputs that agree (a constant, a linear field in output
    pixels) gives them back exactly over ceil(region / stride) output pixels, borders and last tiles included;
    buffers are one output tile high."""
    grid, stride = case
    n = grid.tile_size // stride
    blender = StripBlender(grid, 2, stride=stride)
    values, mask, _ = _blend(grid, 2, lambda t: np.stack([np.full((n, n), 0.3, np.float32),
                                                          _out_ramp(blender.out_window(t))[0]]), blender=blender)
    rows, cols = output_shape(grid.region, stride)
    assert values.shape == (2, rows, cols) and mask.all()
    np.testing.assert_allclose(values[0], 0.3, atol=1e-6)
    np.testing.assert_allclose(values[1], _out_ramp(Window(0, 0, cols, rows))[0], atol=3e-6)
    assert blender.sums.shape == (2, n, cols)


def test_strided_validity_majority_rule() -> None:
    """An output pixel is valid when at least half of its input pixels inside the region are valid: 8 of 16
    valid → valid, 7 of 16 → invalid; the last column (only 2 of its 4 input columns inside the region) is judged
    on those 2 columns."""
    stride = 4
    grid = TileGrid(Window(0, 0, 14, 16), 16, 0, align=stride)  # one tile; output 4 × 4 px, last col half inside
    holes = np.zeros((16, 16), bool)
    holes[0:4, 0:4].flat[:8] = True  # output (0, 0): 8 of 16 invalid → still valid (half valid)
    holes[0:4, 4:8].flat[:9] = True  # output (0, 1): 9 of 16 invalid → invalid
    holes[4:8, 12:14] = True  # output (1, 3): its 8 in-region pixels all invalid → invalid
    holes[0:4, 14:16] = True  # output (0, 3): outside the region only → valid (its 8 in-region pixels are)
    _, mask, _ = _blend(grid, 1, lambda t: np.ones((1, 4, 4), np.float32), valid=lambda t: ~holes,
                        blender=StripBlender(grid, 1, stride=stride))
    expected = np.ones((4, 4), bool)
    expected[0, 1] = expected[1, 3] = False
    np.testing.assert_array_equal(mask, expected)


def test_blender_start_row_ignores_rows_above() -> None:
    """A resumed blender starts at ``start_row``: contributions above it are dropped, rows below blend as usual."""
    grid = TileGrid(Window(0, 0, 32, 64), 32, 16, align=8)
    blender = StripBlender(grid, 1, stride=8, start_row=3)
    tile = Tile(0, 0, 0, Window(0, 0, 32, 32), (False, True, False, False))
    blender.add(tile, np.ones((1, 4, 4), np.float32), np.ones((32, 32), bool))
    assert not blender.weights[:, :].any(axis=1)[1:].any()  # only output row 3 (buffer row 0) received weight
    assert blender.weights[0].all()
    chunks = blender.release_until(64)
    assert chunks[0].row_off == 3 and sum(c.valid.shape[0] for c in chunks) == 5
