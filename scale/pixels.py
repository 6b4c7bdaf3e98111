"""Per-pixel mapping (the scikit-learn steps: reduction, clustering, similarity, supervised prediction) on a Dask
cluster: the region cut into bands of rows (pixels need no neighbours, so no halo), each mapped by a worker with the
fitted function shipped to it; the same outputs as :func:`~tiling.pixelwise.map_pixels` in this process."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

from ..tiling.callbacks import Callbacks
from ..tiling.pixel_sampling import require_valid_pixel
from ..tiling.pixelwise import PixelFunction, PixelOutput, PixelRunStats, pixel_writer
from ..tiling.source import RasterSource
from ..tiling.window import Window
from .backend import Backend
from .runner import PartPlanner, run_pieces
from .worker import PixelPlan, pixel_piece

PIECES_PER_WORKER = 4
"""Bands of rows per worker (pixels cost nothing at the bands' edges, so smaller pieces balance better)."""


def map_pixels_on_cluster(source: RasterSource, bands: Sequence[int], fn: PixelFunction,
                          outputs: Sequence[PixelOutput], region: Window | None = None,
                          callbacks: Callbacks | None = None, *, backend: Backend,
                          rows_per_piece: int | None = None) -> PixelRunStats:
    """:func:`~tiling.pixelwise.map_pixels` on ``backend``'s cluster (same arguments and outputs)."""
    cb = callbacks or Callbacks()
    if source.gcp_warning:
        cb.warning(source.gcp_warning)
    require_valid_pixel(source, bands, region, cb)  # an all-nodata raster stops here, before outputs are made
    region = region or source.window
    plan = PixelPlan(source.path, tuple(bands), fn, tuple(outputs), region)
    writers = {str(i): pixel_writer(out, region, source) for i, out in enumerate(outputs)}
    done = run_pieces(pixel_piece, plan, writers, row_bands(region, rows_per_piece), backend, cb, device="cpu")
    return PixelRunStats(windows=done.pieces, valid_pixels=done.done, pixels=region.width * region.height,
                         seconds=done.seconds, outputs=done.outputs,
                         value_counts=[writer.value_counts for writer in writers.values()])


def cluster_mapper(backend: Backend):
    """A drop-in for :func:`~tiling.pixelwise.map_pixels` that maps on ``backend``'s cluster."""
    return partial(map_pixels_on_cluster, backend=backend)


def row_bands(region: Window, rows_per_piece: int | None) -> PartPlanner:
    """Full-width bands of ``rows_per_piece`` rows (default: :data:`PIECES_PER_WORKER` per worker), in multiples
    of the writers' block."""

    def plan(workers: int, block: int) -> list[Window]:
        wanted = rows_per_piece or math.ceil(region.height / (PIECES_PER_WORKER * workers))
        height = max(block, math.ceil(wanted / block) * block)
        return [Window(0, row, region.width, min(height, region.height - row))
                for row in range(0, region.height, height)]

    return plan
