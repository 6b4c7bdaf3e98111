"""The QGIS-free entry points of feature-space analysis, one per Processing algorithm (as
:func:`models.pixel_classification.classify_raster` is for pixels): each takes resolved inputs, reports through
:class:`~tiling.engine.Callbacks` and writes its rasters window by window, so it runs the same in QGIS, in plain
Python and in a worker process.

Progress is split over the stages of a run: sampling (0–30 %), fitting, mapping every pixel (35–100 %); for
supervised learning, validation (5–50 %) and mapping (50–100 %).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..tiling.callbacks import Callbacks, sub_callbacks
from ..tiling.pixel_sampling import sample_valid_pixels, values_at_points
from ..tiling.pixelwise import PixelOutput, PixelRunStats, map_pixels
from ..tiling.source import RasterSource
from ..tiling.window import Window
from .errors import ModelFileError, TrainingDataError
from .estimators import BuiltEstimator
from .fitted import FittedModel, class_output
from .reference import ON_NODATA, ReferenceFeature, ReferencePixels, reference_pixels
from .similarity import Prototypes, class_prototypes, similarity_function
from .supervised import TrainingSet, train_model
from .trust import check_compatible, load_model
from .validation import ValidationPlan, ValidationReport

CENTRE_SAMPLE = 10000
"""Pixels sampled to estimate the raster's mean band vector for centred similarity."""

FitFunction = Callable[..., FittedModel]
"""``fit(sample (pixels, bands), built, band_names, standardize, params=...) -> FittedModel``."""


@dataclass(frozen=True)
class RasterSelection:
    """The raster an analysis reads: its bands (1-based) and their names, the region (None: whole raster), and how
    every pixel is mapped once fitted: :func:`~tiling.pixelwise.map_pixels` in this process, or a drop-in with the
    same arguments (``scale.pixels.cluster_mapper``: on a Dask cluster)."""

    source: RasterSource
    bands: tuple[int, ...]
    band_names: tuple[str, ...]
    region: Window | None = None
    mapper: Callable[..., PixelRunStats] = map_pixels

    @classmethod
    def of(cls, source: RasterSource, bands: Sequence[int] = (), region: Window | None = None,
           mapper: Callable[..., PixelRunStats] = map_pixels) -> RasterSelection:
        """``bands`` of ``source`` (empty: all), checked, named by their descriptions ("band i" when empty)."""
        chosen = tuple(bands) or tuple(range(1, source.band_count + 1))
        source.check_bands(chosen)
        names = tuple(source.descriptions[b - 1] or f"band {b}" for b in chosen)
        return cls(source, chosen, names, region, mapper)


@dataclass(frozen=True)
class Sampling:
    """How to draw the pixels an estimator is fitted on: sample size, seed, standardise bands first."""

    size: int
    seed: int
    standardize: bool = True


@dataclass(frozen=True)
class ReferenceLayer:
    """Reference features (in the raster's CRS) and how to read them: points or polygons, labelled or not, at
    most ``per_polygon`` pixels per polygon, ``role`` naming the layer in messages ("training layer")."""

    features: Iterable[ReferenceFeature]
    points: bool
    labelled: bool
    per_polygon: int | None
    role: str


def fit_and_map(selection: RasterSelection, built: BuiltEstimator, fit: FitFunction, sampling: Sampling,
                output: str, callbacks: Callbacks | None = None) -> FittedModel:
    """Fit ``built`` on a random sample of valid pixels with ``fit``, then map every pixel to ``output``."""
    cb = callbacks or Callbacks()
    cb.stage(f"Sampling {sampling.size} valid pixels")
    sample = sample_valid_pixels(selection.source, selection.bands, sampling.size, sampling.seed, selection.region,
                                 sub_callbacks(cb, 0.0, 0.3), allow_fewer=True)
    if sample.valid_count < sampling.size:  # a small raster or extent: fit on all of it rather than fail
        cb.info(f"Only {sample.valid_count} valid pixels, fewer than the sample size of {sampling.size}: all of them "
                "are used.")
    cb.info(f"Sampled {len(sample.values)} of {sample.valid_count} valid pixels ({len(selection.bands)} bands).")
    cb.stage(f"Fitting {built.name}")
    fitted = fit(sample.values, built, selection.band_names, sampling.standardize,
                 params={"sample_size": sampling.size, "seed": sampling.seed, "bands": list(selection.bands)})
    for key, value in fitted.notes.items():
        cb.info(f"{key.replace('_', ' ')}: {value}")
    cb.stage("Mapping every pixel")
    stats = selection.mapper(selection.source, selection.bands, fitted.pixel_function(),
                             [fitted.main_output(output)], selection.region, sub_callbacks(cb, 0.35, 1.0))
    cb.info(f"{stats.valid_pixels} valid pixels mapped in {stats.windows} windows, {stats.seconds:.1f} s.")
    return fitted


def read_reference(selection: RasterSelection, layer: ReferenceLayer, seed: int,
                   callbacks: Callbacks | None = None) -> ReferencePixels:
    """Reference pixels of ``layer`` with their band values; pixels on nodata are skipped and counted.

    Raises:
        TrainingDataError: no feature gives a pixel inside the raster, or every pixel lies on nodata.
    """
    cb = callbacks or Callbacks()
    src = selection.source
    if not src.georeferenced or src.gcps:
        what = "is georeferenced by ground control points only" if src.gcps else "has no georeferencing"
        raise TrainingDataError(
            f"The raster {src.path} {what} (no geotransform), so the {layer.role}'s map coordinates cannot be placed "
            "on its pixels. Georeference or warp the raster first (Georeferencer, Raster > Projections > Warp, or "
            "gdalwarp), or use a georeferenced copy of it."
        )
    ref = reference_pixels(layer.features, src.geotransform, (src.width, src.height), layer.points, layer.labelled,
                           layer.per_polygon, seed, layer.role, cb.is_cancelled)
    values, valid = values_at_points(src, selection.bands, ref.cols, ref.rows)
    ref.values = values
    if not valid.all():
        ref.skipped[ON_NODATA] = int((~valid).sum())
        ref = ref.subset(valid)
    skipped = ref.skipped_text()
    cb.info(f"{layer.role.capitalize()}: {ref.features_used} feature(s) give {len(ref.cols)} usable pixel(s)"
            + (f"; skipped: {skipped}." if skipped else "."))
    if len(ref.cols) == 0:
        raise TrainingDataError(f"Every pixel of the {layer.role} lies on nodata in the raster ({skipped}). Choose "
                                "reference data over valid pixels.")
    return ref


def training_set(selection: RasterSelection, layer: ReferenceLayer, seed: int, max_samples: int,
                 callbacks: Callbacks | None = None) -> TrainingSet:
    """Samples of a labelled reference layer, at most ``max_samples`` (a seeded random subset beyond that)."""
    cb = callbacks or Callbacks()
    ref = read_reference(selection, layer, seed, cb)
    if len(ref.cols) > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(len(ref.cols), max_samples, replace=False))
        cb.info(f"{len(ref.cols)} {layer.role} pixels; {max_samples} drawn at random (maximum training samples).")
        ref = ref.subset(keep)
    return TrainingSet(ref.values, ref.labels, ref.groups, ref.xy)


def train_and_map(selection: RasterSelection, train: TrainingSet, task: str, built: BuiltEstimator,
                  plan: ValidationPlan, standardize: bool, output: str, probabilities: str | None = None,
                  test: TrainingSet | None = None, params: dict[str, Any] | None = None,
                  callbacks: Callbacks | None = None) -> tuple[FittedModel, ValidationReport]:
    """Validate ``built`` on ``train`` as ``plan`` says, refit it on every sample and map every pixel to
    ``output`` (and class probabilities to ``probabilities``)."""
    cb = callbacks or Callbacks()
    cb.stage(f"Validating: {plan.describe()}")
    fitted, report = train_model(train, task, built, plan, selection.band_names, standardize, test,
                                 sub_callbacks(cb, 0.05, 0.5), params)
    cb.info(report.summary())
    for warning in report.warnings:
        cb.warning(warning)
    cb.stage("Mapping every pixel")
    heads = [fitted.main_output(output)] + ([fitted.probability_output(probabilities)] if probabilities else [])
    stats = selection.mapper(selection.source, selection.bands, fitted.pixel_function(probabilities is not None),
                             heads, selection.region, sub_callbacks(cb, 0.5, 1.0))
    cb.info(f"{stats.valid_pixels} valid pixels predicted in {stats.seconds:.1f} s.")
    return fitted, report


def similarity_map(selection: RasterSelection, ref: ReferencePixels, labels: Sequence[str], output: str,
                   classes_path: str | None = None, threshold: float = 0.9, centre: bool = False, seed: int = 0,
                   callbacks: Callbacks | None = None) -> Prototypes:
    """Cosine similarity of every pixel to the mean vector of each class of ``ref`` (``labels``, one per pixel)
    into ``output``; with ``classes_path``, the most similar class at or above ``threshold``. With ``centre``, the
    raster's mean vector (from a seeded sample) is subtracted first."""
    cb = callbacks or Callbacks()
    mean = None
    if centre:
        sample = sample_valid_pixels(selection.source, selection.bands, CENTRE_SAMPLE, seed, selection.region,
                                     sub_callbacks(cb, 0.0, 0.2), allow_fewer=True)
        mean = sample.values.astype("float64").mean(axis=0)
    prototypes = class_prototypes(ref.values, labels, mean)
    cb.info("Reference pixels per class: " + ", ".join(
        f"{n} ({c})" for n, c in zip(prototypes.names, prototypes.counts, strict=True)))
    outputs = [PixelOutput(output, len(prototypes.names), np.float32, float("nan"),
                           tuple(f"similarity to {n}" for n in prototypes.names))]
    if classes_path:
        outputs.append(class_output(classes_path, prototypes.classes(), "most similar class"))
    stats = selection.mapper(selection.source, selection.bands,
                             similarity_function(prototypes, threshold if classes_path else None), outputs,
                             selection.region, sub_callbacks(cb, 0.2, 1.0))
    cb.info(f"{stats.valid_pixels} valid pixels compared in {stats.seconds:.1f} s.")
    return prototypes


def apply_saved_model(selection: RasterSelection, model_path: str, trusted: bool, output: str,
                      probabilities: str | None = None, callbacks: Callbacks | None = None) -> FittedModel:
    """Apply a model saved by :func:`~analysis.trust.save_model` to every pixel (signature checked unless
    ``trusted``); mismatching band names are reported as warnings."""
    cb = callbacks or Callbacks()
    fitted, warnings = load_model(model_path, trusted)
    for warning in warnings + check_compatible(fitted, selection.band_names):
        cb.warning(warning)
    cb.info(f"Applying {fitted.name} ({fitted.kind}, {fitted.n_features} bands).")
    if probabilities and not fitted.has_probabilities():
        raise ModelFileError(f"{fitted.name} ({fitted.kind}) gives no class probabilities; leave that output empty.")
    heads = [fitted.main_output(output)] + ([fitted.probability_output(probabilities)] if probabilities else [])
    stats = selection.mapper(selection.source, selection.bands, fitted.pixel_function(probabilities is not None),
                             heads, selection.region, cb)
    cb.info(f"{stats.valid_pixels} valid pixels in {stats.seconds:.1f} s.")
    return fitted
