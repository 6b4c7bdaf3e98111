"""Column panels: how a wide region is cut into vertical bands that are produced one after the other.

What the run loop holds at once (strips read ahead, the blending buffer, the writers' pending block rows) is as wide
as the columns it produces at once. A region wider than the panel width is therefore produced in panels, left to
right, each from top to bottom. A panel is produced with every tile of the whole grid that reaches it, weighted as
in the whole grid, so the result is identical to a run without panels; the tile columns that straddle a panel edge
are computed once for each panel they reach (a few percent more compute, for memory that no longer grows with the
raster's width). Panel edges fall on multiples of the output block size, so every TIFF block is written once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .grid import TileGrid, output_shape

DEFAULT_PANEL_WIDTH = 6144
"""Input pixels produced at once across a wide region (at least 16 tiles wide, see :func:`plan_panels`)."""


@dataclass(frozen=True)
class Panel:
    """One panel: output columns ``[col_off, col_end)`` counted from the region's left edge (output pixels) and the
    tile columns of the whole grid that reach them."""

    col_off: int
    col_end: int
    grid: TileGrid

    @property
    def width(self) -> int:
        """Output columns of the panel."""
        return self.col_end - self.col_off


def plan_panels(grid: TileGrid, stride: int = 1, block: int = 256,
                max_width: int = DEFAULT_PANEL_WIDTH) -> list[Panel]:
    """Cut ``grid.region`` into panels of at most ``max(max_width, 16 · tile size)`` input pixels.

    Args:
        grid: the whole tile grid.
        stride: output stride of the model (output pixels are ``stride`` input pixels wide).
        block: panel edges fall on multiples of this many output pixels (the writers' TIFF block width).
        max_width: widest panel, in input pixels; the panels of a region are as equal as the blocks allow.

    A region that fits in one panel gets one panel holding the whole grid.
    """
    _, out_cols = output_shape(grid.region, stride)
    widest = max(max_width, 16 * grid.tile_size) // stride
    per_panel = max(widest // block, 1) * block
    count = math.ceil(out_cols / per_panel)
    if count <= 1:
        return [Panel(0, out_cols, grid)]
    width = math.ceil(math.ceil(out_cols / count) / block) * block
    return [panel_of(grid, col_off, min(col_off + width, out_cols), stride) for col_off in range(0, out_cols, width)]


def panel_of(grid: TileGrid, col_off: int, col_end: int, stride: int = 1) -> Panel:
    """The panel of output columns ``[col_off, col_end)`` (from the region's left edge) with every tile of the whole
    grid that reaches them."""
    first_input = grid.region.col_off + col_off * stride
    end_input = min(grid.region.col_off + col_end * stride, grid.region.col_end)
    return Panel(col_off, col_end, grid.columns(*grid.columns_touching(first_input, end_input)))
