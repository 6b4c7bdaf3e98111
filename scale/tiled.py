"""Classify pixels and Extract deep features on a Dask cluster: the same outputs as in this process.

The plan (every check, the bands, the tiling, the runtime) is made here, in the client; the pieces follow the
engine's column panels cut into bands of rows (:mod:`scale.pieces`) and are computed by :mod:`scale.worker`.
"""

from __future__ import annotations

import dataclasses

from ..models.feature_extraction import (
    FeatureRequest,
    FeatureResult,
    feature_head,
    feature_result,
    noted,
    plan_features,
)
from ..models.pixel_classification import ClassifyRequest, make_heads, plan_classification
from ..models.runtimes import coverage_factor
from ..tiling.callbacks import Callbacks
from ..tiling.engine import RunStats
from ..tiling.grid import TileGrid
from ..tiling.source import RasterSource
from .backend import Backend
from .pieces import piece_rows, plan_pieces
from .runner import PartPlanner, PiecesDone, run_pieces
from .worker import classify_piece, feature_piece


def classify_on_cluster(request: ClassifyRequest, backend: Backend, callbacks: Callbacks | None = None,
                        rows_per_piece: int | None = None) -> RunStats:
    """:func:`~models.pixel_classification.classify_raster` on a Dask cluster: the same outputs."""
    callbacks = callbacks or Callbacks()
    plan = plan_classification(request, callbacks)
    grid = plan.grid
    callbacks.info(f"Model {request.package.name} on the Dask workers ({plan.runtime}); bands {list(plan.bands)}; "
                   f"tiles {plan.tile} px, overlap {plan.overlap} px; coverage factor {coverage_factor(grid):.2f}.")
    heads = make_heads(request.package, RasterSource.open(request.raster), plan.region, plan.outputs,
                       request.probabilities_percent)
    writers = {key: head.writer for key, head in zip(plan.outputs, heads, strict=True)}
    done = run_pieces(classify_piece, plan, writers, tiled_parts(grid, 1, rows_per_piece), backend, callbacks,
                      request.device)
    return run_stats(grid, done)


def extract_on_cluster(request: FeatureRequest, backend: Backend, callbacks: Callbacks | None = None,
                       rows_per_piece: int | None = None) -> FeatureResult:
    """:func:`~models.feature_extraction.extract_features` on a Dask cluster: the same feature raster (a distributed
    run does not resume: an interrupted one starts again)."""
    callbacks = callbacks or Callbacks()
    notes, info = noted(callbacks)
    plan, module = plan_features(request, callbacks, info)
    del module  # built to learn the encoder's shape; the workers build their own
    plan = dataclasses.replace(plan, key=None)
    head = feature_head(plan, RasterSource.open(plan.request.raster))
    done = run_pieces(feature_piece, plan, {"features": head.writer},
                      tiled_parts(plan.grid, plan.encoder.stride, rows_per_piece), backend, callbacks, request.device)
    return feature_result(plan, run_stats(plan.grid, done), notes)


def tiled_parts(grid: TileGrid, stride: int, rows_per_piece: int | None) -> PartPlanner:
    """The pieces of a tiled run: the engine's panels in bands of ``rows_per_piece`` output rows (default: about
    two per worker, see :func:`~scale.pieces.piece_rows`)."""
    return lambda workers, block: plan_pieces(grid, stride, block,
                                              rows_per_piece or piece_rows(grid, stride, workers, block))


def run_stats(grid: TileGrid, done: PiecesDone) -> RunStats:
    """The engine's statistics of a distributed run (batches: pieces)."""
    return RunStats(tiles_total=len(grid), tiles_predicted=done.done, tiles_skipped=done.skipped, batches=done.pieces,
                    predict_seconds=done.model_seconds, total_seconds=done.seconds, outputs=done.outputs,
                    workers=done.workers)
