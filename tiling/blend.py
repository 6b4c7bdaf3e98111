"""Weighted blending of overlapping tile predictions, holding only the rows that are still open.

Tiles arrive grid row by grid row. Rows above the start of the next grid row receive no more contributions: they
are released (weighted mean, validity) and the buffers move up. Memory is one tile height × region (or panel)
width × channels (in output pixels: divided by the output stride for feature models), whatever the raster height.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import Tile, TileGrid, output_shape
from .weights import tile_weights
from .window import Window


@dataclass
class Chunk:
    """Finished output rows: ``row_off`` counts from the top of the region (output pixels)."""

    row_off: int
    values: np.ndarray  # (channels, rows, width) float32, weighted mean of the tiles
    valid: np.ndarray  # (rows, width) bool: covered by a tile and valid in the input
    col_off: int = 0  # first column, from the left of the region (a panel of a wide region starts further right)


class StripBlender:
    """Accumulates weighted tile outputs over the open rows of ``grid.region``, in output pixels.

    With ``stride`` s > 1 (a feature model: its output is s times coarser than its input) everything happens at the
    output resolution: a tile of T input pixels gives T/s × T/s outputs, its blending weight is computed at that
    size with the grid's overlap / s, and output pixel (i, j) of the region covers input pixels
    ``(row_off + i·s …, col_off + j·s …)``. The grid must be aligned to s (``TileGrid(..., align=s)``).

    Validity at output resolution: an output pixel is valid when at least half of its input pixels that lie inside
    the region are valid (for s = 1: the input pixel itself). A pixel at the edge of nodata thus keeps its feature
    when mostly valid, and the last row/column (partly past the region) is judged on its part inside the region.

    Args:
        grid: the tile grid (its region is what is produced).
        channels: output channels per pixel.
        method: blending window, ``"hann"`` or ``"centre_crop"`` (see :mod:`tiling.weights`).
        stride: output stride of the model (1: same resolution as the input).
        start_row: output rows already produced (a resumed run): contributions above it are ignored.
        columns: ``(first, end)`` output columns to produce (a panel, see :mod:`tiling.panels`); default all.
            Contributions outside them are ignored, so memory is that panel's width.
    """

    def __init__(self, grid: TileGrid, channels: int, method: str = "hann", stride: int = 1,
                 start_row: int = 0, columns: tuple[int, int] | None = None) -> None:
        if stride < 1 or grid.tile_size % stride or grid.align % stride:
            raise ValueError(f"stride {stride} needs a grid aligned to it (tile size {grid.tile_size}, "
                             f"align {grid.align})")
        self.grid = grid
        self.region = grid.region
        self.method = method
        self.stride = stride
        rows, cols = output_shape(self.region, stride)
        first, end = columns or (0, cols)
        if not 0 <= first < end <= cols:
            raise ValueError(f"columns {first}–{end} are not within the {cols} output columns")
        self.out_region = Window(first, 0, end - first, rows)  # output pixels, origin at the region's top-left
        cols = end - first
        self.out_tile = grid.tile_size // stride
        self.out_overlap = (grid.tile_size - grid.step) // stride
        self.sums = np.zeros((channels, self.out_tile, cols), dtype=np.float32)
        self.weights = np.zeros((self.out_tile, cols), dtype=np.float32)
        self.valid = np.zeros((self.out_tile, cols), dtype=bool)
        self.top = min(max(start_row, 0), rows)  # output row held in buffer row 0

    def out_window(self, tile: Tile) -> Window:
        """The tile's footprint in output pixels of the region."""
        s, w = self.stride, tile.window
        return Window((w.col_off - self.region.col_off) // s, (w.row_off - self.region.row_off) // s,
                      self.out_tile, self.out_tile)

    def add(self, tile: Tile, prediction: np.ndarray, valid: np.ndarray) -> None:
        """Add one tile's ``(channels, tile/s, tile/s)`` prediction and its ``(tile, tile)`` input validity."""
        window = self.out_window(tile)
        open_rows = Window(self.out_region.col_off, self.top, self.out_region.width, self.out_region.height)
        part = window.intersection(self.out_region).intersection(open_rows)
        if part.is_empty:
            return
        in_tile = part.relative_to(window).slices()
        in_buffer = part.relative_to(Window(self.out_region.col_off, self.top, 0, 0)).slices()
        w = tile_weights(self.out_tile, self.out_overlap, tile.open_sides, self.method)[in_tile]
        self.sums[(slice(None), *in_buffer)] += prediction[(slice(None), *in_tile)] * w
        self.weights[in_buffer] += w
        self.valid[in_buffer] |= self._pooled_validity(tile, valid)[in_tile]

    def _pooled_validity(self, tile: Tile, valid: np.ndarray) -> np.ndarray:
        """Input validity ``(tile, tile)`` → output validity ``(tile/s, tile/s)`` (majority of in-region pixels)."""
        s = self.stride
        if s == 1:
            return valid
        inside = np.zeros(valid.shape, dtype=bool)
        inside[self.region.relative_to(tile.window).intersection(Window(0, 0, *valid.shape[::-1])).slices()] = True
        n = self.out_tile
        count_inside = inside.reshape(n, s, n, s).sum(axis=(1, 3))
        count_valid = (valid & inside).reshape(n, s, n, s).sum(axis=(1, 3))
        return (count_inside > 0) & (2 * count_valid >= count_inside)

    def release_until(self, row: int) -> list[Chunk]:
        """Finish the output rows that lie entirely above raster row ``row``, at most a buffer at a time.

        ``row`` is an input (raster) row; at or past the region's end every remaining output row is finished.
        Rows that no tile reached (a grid row skipped because it held no valid pixel) come out invalid.
        """
        chunks = []
        if row >= self.region.row_end:
            target = self.out_region.height
        else:
            target = min((row - self.region.row_off) // self.stride, self.out_region.height)
        while self.top < target:
            n = min(target - self.top, self.weights.shape[0])
            weights = self.weights[:n]
            covered = weights > 0
            values = np.divide(self.sums[:, :n], weights, out=np.zeros_like(self.sums[:, :n]), where=covered)
            chunks.append(Chunk(self.top, values, self.valid[:n] & covered, self.out_region.col_off))
            _shift_up(self.sums, n, axis=1)
            _shift_up(self.weights, n, axis=0)
            _shift_up(self.valid, n, axis=0)
            self.top += n
        return chunks


def _shift_up(buffer: np.ndarray, n: int, axis: int) -> None:
    """Move ``buffer`` up by ``n`` rows along ``axis`` in place and clear the freed rows at the end."""
    rows = buffer.shape[axis]
    index = [slice(None)] * buffer.ndim
    if n < rows:
        index[axis] = slice(0, rows - n)
        dst = tuple(index)
        index[axis] = slice(n, rows)
        buffer[dst] = buffer[tuple(index)].copy()
    index[axis] = slice(max(rows - n, 0), rows)
    buffer[tuple(index)] = 0
