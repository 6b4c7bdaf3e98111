"""Classifying the features of a point or polygon layer from the imagery under them: the pure-Python pipeline behind
"Classify objects".

For each feature, in layer order, a chip is cut around it (:mod:`objects.chips`: its extent plus a buffer, or a
fixed number of raster pixels, resampled to the package's chip size, in the package's bands and normalisation),
chips are classified in batches by an image-classification package (:mod:`models.classifiers`), and the features
are written with their class to a copy of the layer (:class:`objects.gpkg.LayerCopyWriter`) as soon as their batch
is done: memory holds one batch, whatever the number of features. Features that cannot be classified (outside the
raster, on nodata, empty, invalid, not a point or polygon) are copied with NULL class fields and counted. No QGIS
here: tests, benchmarks and scripts call :func:`classify_objects` directly.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from osgeo import ogr

from ..models.classifiers import best_classes, class_probabilities, load_classifier
from ..models.inputs import check_task, check_value_range, package_bands
from ..models.pixel_classification import input_transform
from ..models.spec import ModelPackage
from ..models.weights import unchecked_weights_warning
from ..tiling.callbacks import Callbacks, check_cancel
from ..tiling.destinations import Destination, check_destinations
from ..tiling.errors import DeepRasterError, RasterInputError
from ..tiling.source import RasterSource
from .chips import ChipReader, feature_chip_box, footprint_window
from .features import FeatureLayer, open_features
from .gpkg import LayerCopyWriter

FLUSH_FEATURES = 1024
"""Features held in order at most before they are written (features without a chip between two batches)."""
FIELD_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$|^$")


@dataclass(frozen=True)
class ClassifyObjectsRequest:
    """One run. ``features``: a vector file OGR reads, ``layer_name`` its layer (None: the first) and
    ``features_crs`` a WKT that overrides the layer's own CRS; ``output``: the ``.gpkg`` copy.

    The chip: ``chip_pixels`` raster pixels square, centred on the feature; or (None) the feature's extent made
    square plus ``buffer`` map units of the raster's CRS on every side (a point then takes the package's chip size
    in raster pixels when ``buffer`` is 0). ``None`` elsewhere means "take it from the package"; ``trusted`` allows
    a package whose weights are a whole pickled model; ``field_prefix`` goes before the three class field names.
    """

    raster: str
    package: ModelPackage
    features: str
    output: str
    layer_name: str | None = None
    features_crs: str | None = None
    buffer: float = 0.0
    chip_pixels: int | None = None
    bands: tuple[int, ...] | None = None
    batch_size: int = 32
    device: str = "auto"
    half: bool = False
    value_scale: float | None = None
    value_offset: float | None = None
    trusted: bool = False
    field_prefix: str = ""


@dataclass
class ClassifyObjectsStats:
    """What a run did: features read and classified, those left unclassified by reason, features per class name,
    model calls, the most chips and features held at once, and the wall time (s)."""

    features: int = 0
    classified: int = 0
    skipped: Counter = field(default_factory=Counter)
    per_class: Counter = field(default_factory=Counter)
    batches: int = 0
    chips_held_max: int = 0
    features_held_max: int = 0
    seconds: float = 0.0


def check_request(request: ClassifyObjectsRequest) -> None:
    """Raise :class:`DeepRasterError` for a negative buffer, a chip or batch size below 1, or a field prefix that is
    not a plain field name, naming the parameter."""
    if not (math.isfinite(request.buffer) and request.buffer >= 0):
        raise DeepRasterError(f"The buffer {request.buffer!r} must be a number ≥ 0 (map units of the raster's CRS).")
    if request.chip_pixels is not None and request.chip_pixels < 1:
        raise DeepRasterError(f"The chip size {request.chip_pixels} px must be at least 1 (or 0 in the tool's field "
                              "for the feature's extent plus the buffer).")
    if request.batch_size < 1:
        raise DeepRasterError("The batch size must be at least 1.")
    if not FIELD_PREFIX.match(request.field_prefix):
        raise DeepRasterError(f"The field prefix {request.field_prefix!r} must be letters, digits and underscores, "
                              "not starting with a digit (e.g. health_).")


def classify_objects(request: ClassifyObjectsRequest, callbacks: Callbacks | None = None) -> ClassifyObjectsStats:
    """Classify every feature of ``request.features`` and write the classified copy to ``request.output``."""
    callbacks = callbacks or Callbacks()
    start = time.perf_counter()
    package = request.package
    check_task(package, "image_classification")
    check_request(request)
    check_destinations([Destination(request.output, "classified features", "file", (".gpkg",))],
                       [request.raster, request.features])
    source = RasterSource.open(request.raster)
    if not source.georeferenced or source.gcps:
        raise RasterInputError(f"{source.path} has no geotransform, so features cannot be placed on its pixels. "
                               "Georeference or warp the raster first (Raster > Projections > Warp).")
    bands = package_bands(package, source, request.bands)
    transform = input_transform(request, bands)
    unchecked = unchecked_weights_warning(package.name, package.weights_file, package.weights_sha256)
    if unchecked:
        callbacks.warning(unchecked)
    check_value_range(source, transform, package, callbacks.info)
    layer = open_features(request.features, request.layer_name, source.projection, request.features_crs)
    try:
        _check_layer(layer, source, callbacks)
        return _classify(request, source, transform, layer, callbacks, start)
    finally:
        layer.close()


def _check_layer(layer: FeatureLayer, source: RasterSource, callbacks: Callbacks) -> None:
    """Refuse a layer whose extent (in the raster's CRS) misses the raster; warn when a CRS is unknown."""
    if layer.srs is None or not source.projection:
        callbacks.warning("The layer or the raster has no CRS: the layer's coordinates are taken as the raster's.")
    elif layer.to_raster is not None:
        callbacks.info(f"Features reprojected from {layer.srs.GetName()} to the raster's CRS.")
    extent = layer.envelope_in_raster_crs()
    g = source.geotransform
    xs = [g[0] + c * g[1] + r * g[2] for c in (0, source.width) for r in (0, source.height)]
    ys = [g[3] + c * g[4] + r * g[5] for c in (0, source.width) for r in (0, source.height)]
    if extent is not None and (extent[1] < min(xs) or extent[0] > max(xs) or extent[3] < min(ys)
                               or extent[2] > max(ys)):
        raise DeepRasterError(
            f"None of the {layer.count} features of the layer lies in the raster: the layer's extent "
            f"({extent[0]:.6g}, {extent[2]:.6g}, {extent[1]:.6g}, {extent[3]:.6g} in the raster's CRS) does not "
            f"overlap the raster's ({min(xs):.6g}, {min(ys):.6g}, {max(xs):.6g}, {max(ys):.6g}). Choose the layer "
            "and raster of the same place (a layer without a CRS is taken to be in the raster's CRS).")


def _classify(request: ClassifyObjectsRequest, source: RasterSource, transform, layer: FeatureLayer,
              callbacks: Callbacks, start: float) -> ClassifyObjectsStats:
    from ..tiling.predictor import TorchPredictor, resolve_device

    package = request.package
    device = resolve_device(request.device)
    predictor = TorchPredictor(load_classifier(package, request.trusted), device, package.activation, request.half)
    pixels = request.chip_pixels
    chip_text = f"{pixels} raster px" if pixels else f"feature extent + {request.buffer:g} map units" + (
        f" (points without a buffer: {package.tile_size} raster px)" if not request.buffer else "")
    callbacks.info(f"Classifier {package.name} on {device}; bands {list(transform.bands)}; chips of {chip_text}, "
                   f"resampled to {package.tile_size} px; {layer.count} features.")
    stats = ClassifyObjectsStats()
    writer = LayerCopyWriter(request.output, layer.layer, layer.srs, package.classes, request.field_prefix)
    if writer.replaced:
        callbacks.warning(f"The layer's fields {', '.join(writer.replaced)} are replaced by this run's (give a "
                          "field prefix to keep them).")
    try:
        with ChipReader(source, transform, package.tile_size) as reader:
            batch = _Batch(predictor, package, writer, stats)
            for feature, envelope in layer.features():
                stats.features += 1
                if isinstance(envelope, str):
                    batch.add(feature, None, envelope)
                else:
                    box = feature_chip_box(envelope, source.geotransform, request.buffer, pixels, package.tile_size)
                    read = reader.read(box, footprint_window(envelope, source.geotransform))
                    batch.add(feature, read.chip, read.reason)
                if batch.chips >= request.batch_size or len(batch.rows) >= FLUSH_FEATURES:
                    check_cancel(callbacks)
                    batch.flush()
                    callbacks.progress(stats.features / max(layer.count, 1))
            check_cancel(callbacks)
            batch.flush()
            callbacks.progress(1.0)
        if not stats.classified:
            raise DeepRasterError(f"No feature could be classified: {_skipped_text(stats)}. Choose a layer whose "
                                  "points or polygons lie on valid pixels of the raster.")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    stats.seconds = time.perf_counter() - start
    if stats.skipped:
        callbacks.warning(f"{sum(stats.skipped.values())} of {stats.features} features were not classified (NULL "
                          f"class): {_skipped_text(stats)}.")
    return stats


REASONS = {"outside": "outside the raster", "nodata": "on nodata", "empty": "with an empty geometry",
           "invalid": "with an invalid geometry (repair them with Fix geometries)",
           "not a point or polygon": "neither point nor polygon"}


def _skipped_text(stats: ClassifyObjectsStats) -> str:
    return ", ".join(f"{n} {REASONS.get(reason, reason)}" for reason, n in sorted(stats.skipped.items())) \
        or f"none of the {stats.features} features"


class _Batch:
    """Features in layer order, with their chip or the reason they have none, until the next model call."""

    def __init__(self, predictor, package: ModelPackage, writer: LayerCopyWriter, stats: ClassifyObjectsStats):
        self.predictor, self.package, self.writer, self.stats = predictor, package, writer, stats
        self.rows: list[tuple[ogr.Feature, np.ndarray | None]] = []
        self.chips = 0

    def add(self, feature: ogr.Feature, chip: np.ndarray | None, reason: str) -> None:
        self.rows.append((feature, chip))
        if chip is None:
            self.stats.skipped[reason] += 1
        else:
            self.chips += 1
        self.stats.chips_held_max = max(self.stats.chips_held_max, self.chips)
        self.stats.features_held_max = max(self.stats.features_held_max, len(self.rows))

    def flush(self) -> None:
        """Classify the chips held (one model call) and write every feature held, in order."""
        if not self.rows:
            return
        results: list[tuple[int, float]] = []
        chips = [chip for _, chip in self.rows if chip is not None]
        if chips:
            probabilities = class_probabilities(self.predictor(np.stack(chips)), self.package, len(chips))
            best, confidence = best_classes(probabilities, self.package)
            results = list(zip(best.tolist(), confidence.tolist(), strict=True))
            self.stats.batches += 1
            self.stats.classified += len(chips)
            names = {c.value: c.name for c in self.package.classes}
            self.stats.per_class.update(names[value] for value, _ in results)
        done = iter(results)
        self.writer.write([(feature, *next(done)) if chip is not None else (feature, None, None)
                           for feature, chip in self.rows])
        self.rows, self.chips = [], 0
