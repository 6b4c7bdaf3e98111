"""Cutting a run's output into pieces: the engine's column panels, each cut into bands of rows.

Pieces follow the panels an in-process run would use, so each piece computes its tiles in the same batches as that
run; the tile rows that reach two bands are computed for both (``tile ÷ piece height`` more work per band edge).
"""

from __future__ import annotations

import math

from ..tiling.grid import TileGrid, output_shape
from ..tiling.panels import DEFAULT_PANEL_WIDTH, plan_panels
from ..tiling.window import Window

MIN_TILES_PER_PIECE = 8
"""A piece is at least this many tiles tall: the tile rows computed twice at its edges stay a small share."""

MAX_PIECE_ROWS = 4096
"""Output rows of a piece at most (unless 8 tiles are taller). A process's peak grew with the height of the pieces it
computed (two 4096 × 1024 px pieces: 473 MiB; two 4096 × 4096 px: 558 MiB; a worker on 10240-row pieces of a
20000² raster: 957 MiB) while its numpy allocations did not (214 → 219 MiB; the cause is below Python, not found),
so pieces stay this short; the tile rows computed twice at band edges cost about tile ÷ 4096 more model time."""


def piece_rows(grid: TileGrid, stride: int, workers: int, block: int) -> int:
    """Output rows per piece: about two pieces per worker per panel, at most :data:`MAX_PIECE_ROWS`, at least
    :data:`MIN_TILES_PER_PIECE` tiles tall, a multiple of ``block`` (the outputs' TIFF block)."""
    rows, _ = output_shape(grid.region, stride)
    wanted = max(min(math.ceil(rows / (2 * max(workers, 1))), MAX_PIECE_ROWS),
                 MIN_TILES_PER_PIECE * grid.tile_size // stride)
    return max(block, math.ceil(wanted / block) * block)


def plan_pieces(grid: TileGrid, stride: int, block: int, rows_per_piece: int,
                panel_width: int = DEFAULT_PANEL_WIDTH) -> list[Window]:
    """The pieces (output pixels from the region's top-left), panel by panel, each panel from top to bottom: the
    order the outputs are written in."""
    rows, _ = output_shape(grid.region, stride)
    height = max(block, math.ceil(rows_per_piece / block) * block)
    return [Window(panel.col_off, row, panel.width, min(height, rows - row))
            for panel in plan_panels(grid, stride, block, panel_width) for row in range(0, rows, height)]
