"""Unit tests of ``tiling.windows`` (tile weights) and ``tiling.blend`` (the strip blender).

They prove the blending contract: weights never vanish, borders of the region keep full weight, Hann ramps of
neighbours form a partition of unity, and the weighted mean reproduces any prediction that the tiles agree on
(a constant, a linear field) exactly, with a buffer of one tile height.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from deepraster.tiling.blend import Chunk, StripBlender
from deepraster.tiling.grid import Tile, TileGrid, Window
from deepraster.tiling.windows import tile_weights
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
           method: str = "hann") -> tuple[np.ndarray, np.ndarray, list[Chunk]]:
    """Drive a blender the way the engine does; return the assembled values, validity and the chunks."""
    blender = StripBlender(grid, channels, method)
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
    assert values.shape == (channels, region.height, region.width)
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
