"""Detecting objects in a raster of any size: the pure-Python pipeline behind "Detect objects".

The raster is read strip by strip (:class:`~tiling.reader.StripReader`, the package's bands and normalisation
resolved by :mod:`models.inputs`), tiles without a valid pixel are skipped, the detector runs on batches of tiles,
and :class:`~objects.merge.StreamingMerger` merges the boxes of overlapping tiles exactly, handing finished rows to
the GeoPackage writer. No QGIS here: tests, benchmarks and scripts call :func:`detect_objects` directly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..models.detectors import Detections
from ..models.inputs import check_task
from ..models.pixel_classification import prepare_input
from ..models.spec import ModelPackage
from ..tiling.callbacks import Callbacks, check_cancel
from ..tiling.destinations import Destination, check_destinations
from ..tiling.errors import DeepRasterError
from ..tiling.grid import Tile, TileGrid
from ..tiling.panels import DEFAULT_PANEL_WIDTH
from ..tiling.reader import InputTransform, StripReader
from ..tiling.source import RasterSource
from ..tiling.window import Window
from .gpkg import BoxWriter
from .mask import DetectionMask, detection_mask
from .merge import StreamingMerger
from .predictor import DetectorPredictor


@dataclass(frozen=True)
class DetectRequest:
    """One detection run. ``None`` means "take it from the package" (or "all of the raster" for ``region``).

    ``confidence``: boxes scoring below it are dropped (0–1). ``iou``: two boxes of the same class overlapping by
    more are one object (0–1); ``ios``: so are two boxes whose intersection over the smaller one reaches it (None:
    off); ``class_agnostic``: whatever their classes. ``max_detections``: the best boxes kept
    per tile. Sizes in pixels; ``value_scale`` / ``value_offset`` convert raster values into model units.
    ``panel_width``: wider regions are read in column panels about this wide (the result is the same).
    """

    raster: str
    package: ModelPackage
    output: str
    bands: tuple[int, ...] | None = None
    region: Window | None = None
    confidence: float = 0.5
    iou: float = 0.5
    ios: float | None = None
    class_agnostic: bool = False
    max_detections: int = 300
    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int = 4
    device: str = "auto"
    half: bool = False
    value_scale: float | None = None
    value_offset: float | None = None
    panel_width: int = DEFAULT_PANEL_WIDTH
    max_total: int | None = None
    """Keep only this many boxes of the whole raster, the most confident (None: all)."""
    mask: tuple[bytes, ...] | None = None
    """Mask polygons (WKB in the raster's CRS): tiles wholly outside them are not predicted and a box is kept only
    when the pixel holding its centre is inside them (None: no mask)."""


@dataclass
class DetectStats:
    """What a run did: tiles predicted and skipped (no valid pixel), boxes written, the most boxes held at once,
    and the wall time (s)."""

    tiles_predicted: int = 0
    tiles_skipped: int = 0
    boxes: int = 0
    boxes_held_max: int = 0
    seconds: float = 0.0
    unknown_labels: int = 0  # boxes whose label is no class value of the package (left out)


def check_request(request: DetectRequest) -> None:
    """Raise :class:`DeepRasterError` for thresholds outside 0–1 and counts below 1, naming the parameter."""
    thresholds = [("confidence threshold", request.confidence), ("NMS IoU threshold", request.iou)]
    if request.ios is not None:
        thresholds.append(("intersection-over-smaller threshold", request.ios))
    for label, value in thresholds:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1):
            raise DeepRasterError(f"The {label} {value!r} is outside 0–1: give a number from 0 to 1 "
                                  f"(e.g. 0.5).")
    if request.max_detections < 1 or request.batch_size < 1 or (request.max_total is not None
                                                                 and request.max_total < 1):
        raise DeepRasterError("The maximum detections (per tile and in all) and the batch size must be at least 1.")


@dataclass(frozen=True)
class DetectPlan:
    """What a detection run resolved before its first tile: the input transform and the tile grid. Picklable: a
    worker of a distributed run detects its piece from it (see :mod:`scale`)."""

    request: DetectRequest
    transform: InputTransform
    grid: TileGrid


def plan_detection(request: DetectRequest, callbacks: Callbacks) -> DetectPlan:
    """Check the request and resolve bands, tiling and normalisation (every input error surfaces here)."""
    package = request.package
    check_task(package, "object_detection")
    check_request(request)
    check_destinations([Destination(request.output, "detections", "file", (".gpkg",))])
    source, bands, region, tile, overlap, transform = prepare_input(request, callbacks)
    grid = TileGrid(region, tile, overlap)
    mask = detection_mask(request.mask, source.geotransform, source.projection, region)
    if mask is not None:
        callbacks.info(f"Mask: {mask.count} polygon(s); tiles wholly outside them are not predicted, and a box is "
                       "kept only with its centre inside them.")
    callbacks.info(f"Detector {package.name}; bands {bands}; tiles {tile} px, overlap {overlap} px ({len(grid)} "
                   f"tiles); confidence ≥ {request.confidence:g}, NMS IoU {request.iou:g}"
                   f"{f', IoS {request.ios:g}' if request.ios is not None else ''}"
                   f"{' (class-agnostic)' if request.class_agnostic else ''}.")
    return DetectPlan(request, transform, grid)


def detect_objects(request: DetectRequest, callbacks: Callbacks | None = None) -> DetectStats:
    """Run a detection package over a raster and write its boxes to ``request.output`` (a GeoPackage)."""
    callbacks = callbacks or Callbacks()
    plan = plan_detection(request, callbacks)
    predictor = DetectorPredictor(request.package, request.device, request.half)
    callbacks.info(f"Detector on {predictor.device}.")  # the device is known once the detector is loaded
    source = RasterSource.open(request.raster)
    reader = StripReader(source, plan.grid, plan.transform)

    def detections(merger: StreamingMerger, stats: DetectStats) -> None:
        for panel in panels(plan.grid, request.panel_width):
            for item in detect_tiles(request, panel, reader.for_grid(panel), predictor, stats, callbacks,
                                     len(plan.grid)):
                if item is None:
                    merger.flush()
                else:
                    merger.add(*item)

    return merge_into_gpkg(plan, source, detections, callbacks)


def merge_into_gpkg(plan: DetectPlan, source: RasterSource, detections, callbacks: Callbacks) -> DetectStats:
    """Merge the tiles' detections that ``detections(merger, stats)`` adds into the output GeoPackage, committed
    when complete (removed on any failure)."""
    start = time.perf_counter()
    request = plan.request
    stats = DetectStats()
    writer = BoxWriter(request.output, source.geotransform, source.projection, request.package.classes)
    try:
        merger = StreamingMerger(plan.grid, request.iou, request.class_agnostic, writer.write, request.ios)
        detections(merger, stats)
        merger.finish()
        if request.max_total is not None:
            dropped = writer.keep_best(request.max_total)
            if dropped:
                callbacks.info(f"Kept the {request.max_total} most confident of {request.max_total + dropped} boxes "
                               "(maximum detections in all).")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    if stats.unknown_labels:
        known = sorted(c.value for c in request.package.classes)
        callbacks.warning(f"{stats.unknown_labels} boxes had labels that are not class values of the package's class "
                          f"table ({', '.join(map(str, known))}) and were left out.")
    stats.boxes, stats.boxes_held_max = writer.count, merger.held_max
    stats.seconds = time.perf_counter() - start
    return stats


def panels(grid: TileGrid, max_width: int = DEFAULT_PANEL_WIDTH) -> list[TileGrid]:
    """The grid cut into column panels of whole tile columns, about ``max_width`` input pixels wide (at least one
    tile column), so that a strip (and the memory a run holds) does not grow with the raster's width."""
    per = max(max_width // grid.step, 1)
    cols = len(grid.col_starts)
    if cols <= per:
        return [grid]
    count = -(-cols // per)
    per = -(-cols // count)
    return [grid.columns(first, min(first + per, cols)) for first in range(0, cols, per)]


def detect_tiles(request: DetectRequest, panel: TileGrid, reader: StripReader, predictor: DetectorPredictor,
                 stats: DetectStats, callbacks: Callbacks, total: int) -> Iterator[tuple[Tile, Detections] | None]:
    """Strip by strip over one panel (the grid rows ``reader`` reads): every tile with its detections in raster
    pixels (a tile without a valid pixel with none; the tiles with one through the detector in batches), and None
    after each strip (the merger may flush). Progress: tiles done (``stats``) of ``total``."""
    known = np.asarray(sorted(c.value for c in request.package.classes))
    source = reader.source
    mask = detection_mask(request.mask, source.geotransform, source.projection, source.window)
    for strip in reader:
        todo: list[tuple[Tile, slice, np.ndarray | None]] = []
        strip_inside = mask.inside(strip.window) if mask is not None else None  # burnt once per strip
        for t in panel.row(strip.grid_row):
            cols = slice(t.window.col_off - strip.window.col_off, t.window.col_end - strip.window.col_off)
            inside = strip_inside[:, cols] if strip_inside is not None else None
            valid = strip.valid[:, cols] if inside is None else strip.valid[:, cols] & inside
            if valid.any():
                todo.append((t, cols, inside))
            else:
                stats.tiles_skipped += 1
                yield t, Detections.empty()
        for first in range(0, len(todo), request.batch_size):
            check_cancel(callbacks)
            part = todo[first:first + request.batch_size]
            found = predictor(np.stack([strip.data[:, :, cols] for _, cols, _ in part]))
            for (t, _, inside), tile_found in zip(part, found, strict=True):
                labelled = np.isin(tile_found.labels, known)
                stats.unknown_labels += int((~labelled).sum())
                kept = tile_found.select(labelled)
                if inside is not None:
                    kept = DetectionMask.keep(kept, inside)
                yield t, in_raster(kept, t, request)
            stats.tiles_predicted += len(part)
            callbacks.progress(min((stats.tiles_predicted + stats.tiles_skipped) / total, 1.0))
        yield None


def in_raster(found: Detections, tile: Tile, request: DetectRequest) -> Detections:
    """A tile's detections scoring at least the confidence threshold, the best ``max_detections`` of them, moved
    from tile pixels to raster pixels."""
    found = found.select(found.scores >= request.confidence)
    if len(found) > request.max_detections:
        found = found.select(np.argsort(-found.scores, kind="stable")[:request.max_detections])
    shift = np.array([tile.window.col_off, tile.window.row_off] * 2, dtype=np.float64)
    return Detections(found.boxes + shift, found.scores, found.labels)
