"""Exact, streaming merging of the detections of overlapping tiles.

1. **Ownership.** A box is kept only by the tile whose core (:func:`~objects.boxes.core_bounds`: the tile less half
   of each overlap it shares with a neighbour, clipped to the region) holds its centre. Cores split the region, so
   an object whole in two tiles is kept once, and the halves of an object a tile edge cuts, whose centres lie
   nearer that edge, are dropped where the neighbour sees the whole object (objects smaller than the overlap).
2. **Non-maximum suppression** within a tile (greedy, by score), then across tiles among the tiles whose extents
   overlap only: of two boxes of such tiles that overlap by IoU > the threshold (same class, or any class when
   class-agnostic), the lower score goes (equal scores: the box of the later tile). Boxes of tiles that do not
   overlap never meet, which is what keeps the merge local.
3. **Streaming.** A tile's boxes are final once every tile overlapping it has been added: they then go to the sink
   and the tile is forgotten. Tiles may come row by row or in column panels (each panel top to bottom); what is
   held is the tiles with a neighbour still to come (about two rows of a panel and the tile column along the
   previous panel's edge), never one global list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..models.detectors import Detections
from ..tiling.grid import Tile, TileGrid
from .boxes import centres, core_bounds, duplicates, nms, overlapping, same_class

Sink = Callable[[Detections], None]


@dataclass
class _TileBoxes:
    """The boxes a tile owns after its own NMS, and which of them no neighbour has suppressed."""

    index: int
    found: Detections
    alive: np.ndarray


class StreamingMerger:
    """Takes each tile's detections (raster pixels) and hands the boxes of finished tiles to ``sink``.

    Every tile of the grid must be added once (a tile without a valid pixel with no detections), in any order.

    Args:
        grid: the tile grid of the run.
        iou: the IoU above which two boxes are one object (0–1).
        agnostic: suppress across classes too.
        ios: with it, two boxes whose intersection over the smaller box reaches it are one object too (0–1).
        sink: gets the surviving boxes of the tiles finished since the last :meth:`flush`.
    """

    def __init__(self, grid: TileGrid, iou: float, agnostic: bool, sink: Sink, ios: float | None = None) -> None:
        region, tile = grid.region, grid.tile_size
        self.iou, self.agnostic, self.sink, self.ios = iou, agnostic, sink, ios
        self.row_cores = core_bounds(grid.row_starts, tile, region.row_off, region.row_end)
        self.col_cores = core_bounds(grid.col_starts, tile, region.col_off, region.col_end)
        self.row_near = overlapping(grid.row_starts, tile)
        self.col_near = overlapping(grid.col_starts, tile)
        self.held: dict[tuple[int, int], _TileBoxes] = {}
        self.waiting: dict[tuple[int, int], int] = {}  # tiles → overlapping tiles (themselves included) still to come
        self.done: list[Detections] = []
        self.held_boxes = self.held_max = 0  # boxes held now, and at most (for the benchmarks)

    def near(self, row: int, col: int) -> list[tuple[int, int]]:
        """The tiles whose extents overlap tile ``(row, col)``, itself included."""
        return [(r, c) for r in self.row_near[row] for c in self.col_near[col]]

    def owned(self, tile: Tile, found: Detections) -> Detections:
        """The detections whose centre lies in ``tile``'s core."""
        (r0, r1), (c0, c1) = self.row_cores[tile.grid_row], self.col_cores[tile.grid_col]
        x, y = centres(found.boxes)
        return found.select((x >= c0) & (x < c1) & (y >= r0) & (y < r1))

    def add(self, tile: Tile, found: Detections) -> None:
        """Merge the detections of ``tile`` (raster pixels, already thresholded), suppressing against the tiles
        that overlap it and were added before; tiles this one completes are finished."""
        key = (tile.grid_row, tile.grid_col)
        mine = self.owned(tile, found)
        mine = mine.select(nms(mine.boxes, mine.scores, mine.labels, self.iou, self.agnostic, self.ios))
        entry = _TileBoxes(tile.index, mine, np.ones(len(mine), dtype=bool))
        neighbours = self.near(*key)
        if len(mine):
            for other in (self.held[n] for n in neighbours if n in self.held):
                if len(other.found):
                    self._suppress(entry, other)
        self.held[key] = entry
        self.held_boxes += len(mine)
        self.held_max = max(self.held_max, self.held_boxes)
        for n in neighbours:
            left = self.waiting.get(n, len(self.near(*n))) - 1
            if left:
                self.waiting[n] = left
            else:
                self.waiting.pop(n, None)
                self._finish(n)

    def _suppress(self, new: _TileBoxes, old: _TileBoxes) -> None:
        """Of each overlapping pair of boxes of two tiles, the lower score goes (ties: the later tile's box)."""
        a, b = new.found, old.found
        pairs = duplicates(a.boxes, b.boxes, self.iou, self.ios) & same_class(a.labels, b.labels, self.agnostic)
        if not pairs.any():
            return
        new_first = new.index < old.index
        a_wins = (a.scores[:, None] > b.scores[None, :]) | ((a.scores[:, None] == b.scores[None, :]) & new_first)
        new.alive &= ~(pairs & ~a_wins).any(axis=1)
        old.alive &= ~(pairs & a_wins).any(axis=0)

    def _finish(self, key: tuple[int, int]) -> None:
        """Tile ``key`` can change no more: its surviving boxes wait for the next flush."""
        entry = self.held.pop(key)
        self.held_boxes -= len(entry.found)
        if entry.alive.any():
            self.done.append(entry.found.select(entry.alive))

    def flush(self) -> None:
        """Hand the boxes of the tiles finished since the last flush to the sink (one call)."""
        if self.done:
            parts, self.done = self.done, []
            self.sink(Detections(np.concatenate([p.boxes for p in parts]), np.concatenate([p.scores for p in parts]),
                                 np.concatenate([p.labels for p in parts])))

    def finish(self) -> None:
        """The end of the run: every tile still held is finished and flushed."""
        for key in list(self.held):
            self._finish(key)
        self.waiting.clear()
        self.flush()
