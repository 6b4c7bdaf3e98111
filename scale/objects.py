"""Detect objects on a Dask cluster: the workers run the detector on bands of tile rows, the client merges.

Each piece is a column panel's band of grid rows; its tiles' detections (after the per-tile threshold) come back to
the client, which hands them to the same :class:`~objects.merge.StreamingMerger` in the same order as a run in this
process: the GeoPackage is the same. Every tile is computed once (merging needs no halo: it happens here).
"""

from __future__ import annotations

import math

from ..objects.detection import DetectRequest, DetectStats, merge_into_gpkg, panels, plan_detection
from ..objects.merge import StreamingMerger
from ..tiling.callbacks import Callbacks
from ..tiling.grid import TileGrid
from ..tiling.source import RasterSource
from ..tiling.window import Window
from .backend import Backend, connect
from .runner import PiecesDone, compute
from .worker import PieceResult, detect_piece

PIECES_PER_WORKER = 4
"""Bands of tile rows per worker and panel (tiles are never computed twice, so small pieces cost nothing)."""


def detect_on_cluster(request: DetectRequest, backend: Backend, callbacks: Callbacks | None = None,
                      rows_per_piece: int | None = None) -> DetectStats:
    """:func:`~objects.detection.detect_objects` on a Dask cluster: the same GeoPackage."""
    callbacks = callbacks or Callbacks()
    plan = plan_detection(request, callbacks)

    def detections(merger: StreamingMerger, stats: DetectStats) -> None:
        rows = [plan.grid.row(r) for r in range(len(plan.grid.row_starts))]

        def merge(_: int, result: PieceResult) -> None:
            tiles, unknown = result.payload
            for row, col, found in tiles:
                merger.add(rows[row][col], found)
            merger.flush()
            stats.tiles_predicted += result.done
            stats.tiles_skipped += result.skipped
            stats.unknown_labels += unknown

        with connect(backend, callbacks.info, request.device) as client:
            workers = max(1, len(client.scheduler_info().get("workers", {})))
            parts = detection_parts(plan.grid, request.panel_width, workers, rows_per_piece)
            callbacks.info(f"{len(parts)} pieces of tiles on {workers} Dask worker{'s' if workers != 1 else ''}.")
            compute(client, detect_piece, plan, parts, "", backend, PiecesDone(), callbacks, merge)

    return merge_into_gpkg(plan, RasterSource.open(request.raster), detections, callbacks)


def detection_parts(grid: TileGrid, panel_width: int, workers: int, rows_per_piece: int | None = None) -> list[Window]:
    """The pieces in tiles (columns of the whole grid, grid rows): each column panel of the in-process run in bands
    of ``rows_per_piece`` grid rows (default: :data:`PIECES_PER_WORKER` per worker), panel by panel, top to bottom."""
    n_rows = len(grid.row_starts)
    rows = rows_per_piece or max(1, math.ceil(n_rows / (PIECES_PER_WORKER * workers)))
    return [Window(panel.first_col, row, len(panel.col_starts), min(rows, n_rows - row))
            for panel in panels(grid, panel_width) for row in range(0, n_rows, rows)]
