"""The tile grid that covers a region of a raster with overlapping tiles (windows: :mod:`tiling.window`).

All coordinates are in pixels of the input raster: ``col``/``x`` grows to the right, ``row``/``y`` downwards.
Tiles always have the full tile size; where one reaches past the raster the reader pads it (reflection), so
rasters smaller than a tile, or of any odd size, need no special case in the model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass

from .window import Window


@dataclass(frozen=True)
class Tile:
    """One tile of a grid.

    ``window`` is the full tile footprint in raster pixels (it may reach outside the raster); ``grid_row`` and
    ``grid_col`` are its position in the grid; ``open_sides`` tells, for (top, bottom, left, right), whether a
    neighbouring tile continues the grid on that side (blending tapers only there).
    """

    index: int
    grid_row: int
    grid_col: int
    window: Window
    open_sides: tuple[bool, bool, bool, bool]


def axis_starts(start: int, length: int, tile: int, stride: int, offset: int = 0, align: int = 1) -> list[int]:
    """Tile start positions along one axis so that tiles of ``tile`` pixels cover ``[start, start + length)``.

    Args:
        start: first pixel of the region along this axis.
        length: region length in pixels (> 0).
        tile: tile edge in pixels.
        stride: distance between consecutive tile starts (tile − overlap), in pixels, > 0.
        offset: shifts the whole grid back by this many pixels (tests use it to move the grid by half a stride);
            with 0 the last tile is moved back inside the region instead of hanging past its end.
        align: every start is a multiple of ``align`` away from ``start`` (the output stride of a feature model).

    A region shorter than a tile gets one tile centred on it (the reader pads what lies outside the raster).
    With ``align`` > 1 the stride is rounded down to a multiple of ``align`` (more overlap, never a gap); ``tile``
    should itself be a multiple of ``align``.
    """
    if length <= 0 or tile <= 0 or stride <= 0:
        raise ValueError(f"length, tile and stride must be positive (got {length}, {tile}, {stride})")
    if align > 1:
        stride = max(stride // align, 1) * align
    if length <= tile and offset == 0:
        return [start - ((tile - length) // 2 // align) * align]  # centring shift rounded down: still covers
    first = start - offset
    count = max(math.ceil((start + length - first - tile) / stride), 0) + 1
    starts = [first + k * stride for k in range(count)]
    if offset == 0:
        last = start + length - tile
        starts[-1] = start + -(-(last - start) // align) * align  # rounded up: at most previous start + stride
    return [s for i, s in enumerate(starts) if i == 0 or s > starts[i - 1]]


class TileGrid:
    """Overlapping tiles covering ``region`` row by row (row-major order), every pixel at least once.

    Args:
        region: the pixels to produce, in raster coordinates.
        tile_size: tile edge in pixels.
        overlap: overlap between neighbouring tiles in pixels (0 ≤ overlap < tile_size).
        offset: grid shift ``(rows, cols)`` in pixels (see :func:`axis_starts`); (0, 0) for normal runs.
        align: tile starts are multiples of this from the region origin (feature models' output stride); the tile
            size and the offsets must be multiples of it too, so each tile maps onto whole output pixels.

    ``step`` is the regular distance between tile starts (``tile_size − overlap`` rounded down to a multiple of
    ``align``); ``tile_size − step`` is the overlap actually used, which the blending ramps follow.
    """

    def __init__(self, region: Window, tile_size: int, overlap: int, offset: tuple[int, int] = (0, 0),
                 align: int = 1) -> None:
        if region.is_empty:
            raise ValueError("the region to tile is empty")
        if not 0 <= overlap < tile_size:
            raise ValueError(f"overlap must be in [0, tile_size), got {overlap} for tile size {tile_size}")
        if align < 1 or tile_size % align or offset[0] % align or offset[1] % align:
            raise ValueError(f"tile size {tile_size} and offsets {offset} must be multiples of align {align} ≥ 1")
        self.region = region
        self.tile_size = tile_size
        self.overlap = overlap
        self.align = align
        stride = tile_size - overlap
        self.step = max(stride // align, 1) * align  # regular distance between tile starts (see axis_starts)
        self.row_starts = axis_starts(region.row_off, region.height, tile_size, stride, offset[0], align)
        self.col_starts = axis_starts(region.col_off, region.width, tile_size, stride, offset[1], align)
        self.first_col = 0  # grid column of col_starts[0] in the whole grid (see columns)
        self.total_cols = len(self.col_starts)  # tile columns of the whole grid

    def columns(self, first: int, end: int) -> TileGrid:
        """The same grid restricted to tile columns ``first … end − 1`` (of the whole grid).

        Its tiles keep their place in the whole grid: index, grid column and open sides (so their blending weights
        are those of the whole grid), which lets a wide region be produced in column panels with the same result.
        """
        whole = self.first_col
        if not whole <= first < end <= whole + len(self.col_starts):
            raise ValueError(f"tile columns {first}–{end} are not within {whole}–{whole + len(self.col_starts)}")
        part = copy.copy(self)
        part.col_starts = self.col_starts[first - whole:end - whole]
        part.first_col = first
        return part

    def columns_touching(self, col_off: int, col_end: int) -> tuple[int, int]:
        """``(first, end)`` tile columns of the whole grid whose tiles reach raster columns ``[col_off, col_end)``."""
        touching = [self.first_col + j for j, c in enumerate(self.col_starts)
                    if c < col_end and c + self.tile_size > col_off]
        if not touching:
            raise ValueError(f"no tile reaches raster columns {col_off}–{col_end}")
        return touching[0], touching[-1] + 1

    @property
    def shape(self) -> tuple[int, int]:
        """Number of tile rows and tile columns."""
        return len(self.row_starts), len(self.col_starts)

    def __len__(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    def row(self, grid_row: int) -> list[Tile]:
        """The tiles of one grid row, left to right (positions, indices and open sides as in the whole grid)."""
        n_rows, n_cols = len(self.row_starts), self.total_cols
        r0 = self.row_starts[grid_row]
        return [
            Tile(
                index=grid_row * n_cols + j,
                grid_row=grid_row,
                grid_col=j,
                window=Window(c0, r0, self.tile_size, self.tile_size),
                open_sides=(grid_row > 0, grid_row < n_rows - 1, j > 0, j < n_cols - 1),
            )
            for j, c0 in enumerate(self.col_starts, start=self.first_col)
        ]

    def __iter__(self) -> Iterator[Tile]:
        for i in range(len(self.row_starts)):
            yield from self.row(i)

    def strip_window(self, grid_row: int) -> Window:
        """The footprint of one grid row of tiles: all columns, the tile height."""
        c0, c1 = self.col_starts[0], self.col_starts[-1] + self.tile_size
        return Window(c0, self.row_starts[grid_row], c1 - c0, self.tile_size)

    def first_row_reaching(self, row: int) -> int:
        """Index of the first grid row whose tiles reach raster row ``row`` or below (len(rows) if none does).

        A run resumed at ``row`` starts there: grid rows above end before ``row`` and contribute nothing to it.
        """
        for i, start in enumerate(self.row_starts):
            if start + self.tile_size > row:
                return i
        return len(self.row_starts)


def output_shape(region: Window, stride: int) -> tuple[int, int]:
    """``(rows, cols)`` of the output of a model with output stride ``stride`` over ``region``.

    Output pixel ``(i, j)`` covers input pixels ``region.row_off + i·stride …`` and ``region.col_off + j·stride …``
    (``stride`` × ``stride`` of them); the last row and column may reach past the region (ceil).
    """
    return -(-region.height // stride), -(-region.width // stride)
