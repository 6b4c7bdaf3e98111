"""What a Dask worker runs: one piece of a classification, a feature extraction or a detection, with the model loaded
once per worker, or one band of rows of a per-pixel mapping.

A task is a pure function of (plan, piece, folder): it opens its own GDAL handles, takes the worker's cached
predictor (built on the first piece the worker gets) and writes the piece's GeoTIFFs into ``folder``, which must be
reachable under the same path by the client (a shared filesystem on a real cluster); a detection piece returns its
tiles' boxes instead.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from ..models.feature_extraction import FeaturePlan, feature_predictor, feature_run
from ..models.pixel_classification import ClassifyPlan, classification_run, plan_predictor
from ..objects.detection import DetectPlan, DetectStats, detect_tiles
from ..objects.predictor import DetectorPredictor
from ..tiling.callbacks import Callbacks
from ..tiling.engine import Predict
from ..tiling.pixelwise import PixelFunction, PixelOutput, map_pixels
from ..tiling.reader import StripReader
from ..tiling.source import RasterSource
from ..tiling.window import Window
from .backend import BackendError

_PREDICTORS: dict[tuple, Predict] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class PieceResult:
    """A finished piece: its files by output key, what it did (tiles predicted and skipped, or valid pixels mapped)
    and the seconds it spent in the model."""

    files: dict[str, str]
    done: int
    skipped: int
    seconds: float
    payload: object = None  # what the task returns besides files (detection: every tile's boxes)


def piece_files(keys, part: Window, folder: str) -> dict[str, str]:
    """Where a piece's outputs go: ``<folder>/<key>_c<col>_r<row>.tif``; a :class:`BackendError` when this worker
    cannot see ``folder`` (made by the client beside the first output: no shared filesystem)."""
    if not Path(folder).is_dir():
        raise BackendError(
            f"The Dask worker on {socket.gethostname()} cannot see the folder {folder}, made beside the output on the "
            "computer that started the run: every worker must reach the inputs, the model and the output folder under "
            "the same paths (a shared filesystem). Choose an output folder on shared storage, or run in this process.")
    return {key: str(Path(folder) / f"{key}_c{part.col_off}_r{part.row_off}.tif") for key in keys}


def classify_piece(plan: ClassifyPlan, part: Window, folder: str, threads: int = 1) -> PieceResult:
    """Compute the output window ``part`` of ``plan`` into GeoTIFFs under ``folder`` (committed when complete)."""
    files = piece_files(plan.outputs, part, folder)
    try:
        stats = classification_run(plan, cached_predictor(plan, threads), Callbacks(), part=part, outputs=files).run()
    except BaseException:
        forget_predictors()  # an ONNX Runtime session that could not be made (it fails at the first batch) is
        raise  # not kept: the piece's retry, or the next piece, makes the model again
    return PieceResult(files, stats.tiles_predicted, stats.tiles_skipped, stats.predict_seconds)


def feature_piece(plan: FeaturePlan, part: Window, folder: str, threads: int = 1) -> PieceResult:
    """Compute the output window ``part`` of a feature ``plan`` into a GeoTIFF under ``folder``."""
    files = piece_files(["features"], part, folder)
    stats = feature_run(plan, cached_predictor(plan, threads), Callbacks(), part=part, output=files["features"]).run()
    return PieceResult(files, stats.tiles_predicted, stats.tiles_skipped, stats.predict_seconds)


@dataclass(frozen=True)
class PixelPlan:
    """A per-pixel mapping: the raster, its bands (1-based), the fitted function, the outputs, the region."""

    raster: str
    bands: tuple[int, ...]
    fn: PixelFunction
    outputs: tuple[PixelOutput, ...]
    region: Window


def pixel_piece(plan: PixelPlan, part: Window, folder: str, threads: int = 1) -> PieceResult:
    """Map the rows of ``part`` (pixels from the region's top-left) of a per-pixel ``plan`` into GeoTIFFs under
    ``folder``."""
    files = piece_files([str(i) for i in range(len(plan.outputs))], part, folder)
    outputs = [dataclasses.replace(out, path=files[str(i)]) for i, out in enumerate(plan.outputs)]
    window = part.shifted(plan.region.col_off, plan.region.row_off)
    stats = map_pixels(RasterSource.open(plan.raster), plan.bands, plan.fn, outputs, window, Callbacks(),
                       require_valid=False)
    return PieceResult(files, stats.valid_pixels, 0, stats.seconds)


def detect_piece(plan: DetectPlan, part: Window, folder: str = "", threads: int = 1) -> PieceResult:
    """Detect objects in the tiles of ``part`` (in tiles: columns ``col_off`` … of the whole grid, grid rows
    ``row_off`` …); the payload is every tile's ``(grid row, grid column, detections in raster pixels)`` and the
    count of boxes with unknown labels (the client merges them; no file is written)."""
    request = plan.request
    panel = plan.grid.columns(part.col_off, part.col_end)
    reader = StripReader(RasterSource.open(request.raster), panel, plan.transform)
    reader.skip_to(part.row_off, part.row_end)
    stats = DetectStats()
    tiles = []
    for item in detect_tiles(request, panel, reader, cached_predictor(plan, threads), stats, Callbacks(),
                             len(plan.grid)):
        if item is not None:
            tiles.append((item[0].grid_row, item[0].grid_col, item[1]))
    return PieceResult({}, stats.tiles_predicted, stats.tiles_skipped, 0.0, (tiles, stats.unknown_labels))


def cached_predictor(plan: ClassifyPlan | FeaturePlan | DetectPlan, threads: int) -> Predict:
    """The plan's predictor, built once per worker process (every later piece of the same model reuses it)."""
    request = plan.request
    if isinstance(plan, DetectPlan):
        key = ("detect", str(request.package.weights_file), request.package.weights_sha256, request.device,
               request.half, threads)
    elif isinstance(plan, ClassifyPlan):
        key = ("classify", str(request.package.weights_file), request.package.weights_sha256, plan.runtime,
               request.device, plan.tile, request.batch_size, request.half, request.tta, threads)
    else:
        key = ("features", repr(plan.encoder), str(request.package.weights_file) if request.package else None,
               str(request.weights), request.int8, request.device, request.half, threads)
    with _LOCK:
        if key not in _PREDICTORS:
            if not isinstance(plan, ClassifyPlan) or plan.runtime == "torch":
                import torch

                torch.set_num_threads(threads)
            _PREDICTORS.clear()  # one model per worker: the previous run's goes
            _PREDICTORS[key] = _predictor(plan, threads)
        return _PREDICTORS[key]


def forget_predictors() -> None:
    """Drop the model this worker keeps (the next piece builds it again)."""
    with _LOCK:
        _PREDICTORS.clear()


def _predictor(plan: ClassifyPlan | FeaturePlan | DetectPlan, threads: int) -> Predict:
    if isinstance(plan, ClassifyPlan):
        return plan_predictor(plan, threads)[0]
    if isinstance(plan, FeaturePlan):
        return feature_predictor(plan)
    return DetectorPredictor(plan.request.package, plan.request.device, plan.request.half)
