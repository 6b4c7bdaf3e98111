"""Weighted blending of overlapping tile predictions, holding only the rows that are still open.

Tiles arrive grid row by grid row. Rows above the start of the next grid row receive no more contributions: they
are released (weighted mean, validity) and the buffers move up. Memory is one tile height × region width ×
channels, whatever the raster height.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import Tile, TileGrid, Window
from .windows import tile_weights


@dataclass
class Chunk:
    """Finished output rows: ``row_off`` counts from the top of the region (output pixels)."""

    row_off: int
    values: np.ndarray  # (channels, rows, region width) float32, weighted mean of the tiles
    valid: np.ndarray  # (rows, region width) bool: covered by a tile and valid in the input


class StripBlender:
    """Accumulates weighted tile outputs over the open rows of ``grid.region``.

    Args:
        grid: the tile grid (its region is what is produced).
        channels: output channels per pixel.
        method: blending window, ``"hann"`` or ``"centre_crop"`` (see :mod:`tiling.windows`).
    """

    def __init__(self, grid: TileGrid, channels: int, method: str = "hann") -> None:
        self.grid = grid
        self.region = grid.region
        self.method = method
        height = grid.tile_size
        self.sums = np.zeros((channels, height, self.region.width), dtype=np.float32)
        self.weights = np.zeros((height, self.region.width), dtype=np.float32)
        self.valid = np.zeros((height, self.region.width), dtype=bool)
        self.top = self.region.row_off  # raster row held in buffer row 0

    def add(self, tile: Tile, prediction: np.ndarray, valid: np.ndarray) -> None:
        """Add one tile's ``(channels, tile, tile)`` prediction and its ``(tile, tile)`` input validity."""
        part = tile.window.intersection(self.region)
        if part.is_empty:
            return
        in_tile = part.relative_to(tile.window).slices()
        in_buffer = part.relative_to(Window(self.region.col_off, self.top, 0, 0)).slices()
        w = tile_weights(self.grid.tile_size, self.grid.overlap, tile.open_sides, self.method)[in_tile]
        self.sums[(slice(None), *in_buffer)] += prediction[(slice(None), *in_tile)] * w
        self.weights[in_buffer] += w
        self.valid[in_buffer] |= valid[in_tile]

    def release_until(self, row: int) -> list[Chunk]:
        """Finish the rows from the current top down to raster row ``row`` (exclusive), at most a buffer at a time.

        Rows that no tile reached (a grid row skipped because it held no valid pixel) come out invalid.
        """
        chunks = []
        target = min(row, self.region.row_end)
        while self.top < target:
            n = min(target - self.top, self.weights.shape[0])
            weights = self.weights[:n]
            covered = weights > 0
            values = np.divide(self.sums[:, :n], weights, out=np.zeros_like(self.sums[:, :n]), where=covered)
            chunks.append(Chunk(self.top - self.region.row_off, values, self.valid[:n] & covered))
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
