"""Applying a pixel-classification package to a raster: the pure-Python pipeline behind "Classify pixels".

It resolves everything a run needs (bands, scaling, grid, mask, outputs) from a :class:`ClassifyRequest` and the
package, then hands the work to the shared engine. No QGIS here: tests, benchmarks and scripts call it directly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ..tiling.callbacks import Callbacks
from ..tiling.engine import Predict, RunStats, TiledRun
from ..tiling.errors import DeepRasterError
from ..tiling.grid import TileGrid
from ..tiling.outputs import ClassHead, ClassInfo, OutputHead, ProbabilityHead
from ..tiling.pixel_sampling import require_valid_pixel
from ..tiling.reader import InputTransform, StripReader, ndwi_rule
from ..tiling.source import RasterSource
from ..tiling.window import Window
from ..tiling.writer import check_writable
from .inputs import (
    check_overlap,
    check_task,
    check_training_tile,
    check_value_range,
    check_value_scale,
    fit_tile_to_region,
    package_bands,
    round_tile,
)
from .runtimes import coverage_factor, early_onnx_predictor, make_predictor, resolve_runtime, sample_tile
from .spec import ModelPackage
from .weights import unchecked_weights_warning


@dataclass(frozen=True)
class NdwiMask:
    """Keep only water (NDWI ≥ threshold) or only land (NDWI < threshold); 1-based green and NIR band numbers."""

    green_band: int
    nir_band: int
    threshold: float = 0.0
    keep: str = "water"


@dataclass(frozen=True)
class ClassifyRequest:
    """One classification run. ``None`` means "take it from the package" (or "all of the raster" for region).

    Sizes are in pixels. ``value_scale``/``value_offset`` convert raster values into the model's units.
    ``grid_offset`` and ``blend`` exist for tests and benchmarks (shifted grids, centre-crop stitching).
    ``trusted`` allows a package whose weights are a whole pickled model (pickles can run code when loaded).
    ``edge_margin``: the tile grid starts this many pixels before the region's top and left edges (the reader
    fills them by reflection) and runs on past its bottom and right edges (``None``: the package's ``edge_margin``).
    ``tta``: test-time augmentation, the eight flips / quarter turns of each tile averaged (8× the model time).
    ``runtime``: ``auto`` (ONNX Runtime when installed, else PyTorch), ``torch`` or ``onnxruntime`` (models.runtimes).
    """

    raster: str
    package: ModelPackage
    classes_path: str | None = None
    probabilities_path: str | None = None
    probabilities_percent: bool = False
    bands: tuple[int, ...] | None = None
    region: Window | None = None
    ndwi: NdwiMask | None = None
    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int = 4
    device: str = "auto"
    half: bool = False
    value_scale: float | None = None
    value_offset: float | None = None
    blend: str = "hann"
    grid_offset: tuple[int, int] = (0, 0)
    trusted: bool = False
    tta: bool = False
    edge_margin: int | None = None
    runtime: str = "auto"


def resolve_bands(request: ClassifyRequest, source: RasterSource) -> list[int]:
    """Model input bands as 1-based raster band numbers, in model order (see :func:`inputs.package_bands`)."""
    return package_bands(request.package, source, request.bands)


def resolve_tiling(request: ClassifyRequest, info, warning=None, region: Window | None = None) -> tuple[int, int]:
    """Tile size and overlap in pixels, with the tile rounded up to the model's size divisor and, given ``region``,
    no larger than the region needs (see :func:`inputs.fit_tile_to_region`); ``warning`` gets a message when the
    tile is not the one the model was trained on (see :func:`inputs.check_training_tile`)."""
    package = request.package
    tile = round_tile(request.tile_size or package.tile_size, package.size_divisor, "model's size divisor", info)
    if region is not None:
        tile = fit_tile_to_region(tile, region, package.size_divisor, package.tile_size, info)
    if warning is not None:
        check_training_tile(package, tile, warning)
    return tile, check_overlap(package.overlap if request.overlap is None else request.overlap, tile)


def input_transform(request: ClassifyRequest, bands: list[int]) -> InputTransform:
    """Raw → model-input conversion from the package's scale and normalisation (or the request's override)."""
    package = request.package
    shift, divisor = package.normalization.shift_and_divisor(len(bands))
    scale = package.value_scale if request.value_scale is None else request.value_scale
    offset = package.value_offset if request.value_offset is None else request.value_offset
    check_value_scale(scale, offset)
    return InputTransform(bands=tuple(bands), scale=scale, offset=offset, shift=tuple(shift), divisor=tuple(divisor))


def prepare_input(request, callbacks: Callbacks) -> tuple[RasterSource, list[int], Window, int, int, InputTransform]:
    """What every tiled run of a package needs before its first tile: the raster, its bands in model order, the
    region, tile size and overlap (px), the input transform; warnings (GCPs, unchecked weights, another tile
    size) and checks (value range, at least one valid pixel) done. ``request`` is a :class:`ClassifyRequest` or
    any request with the same input fields (raster, package, bands, region, tile_size, overlap, value scale)."""
    package = request.package
    source = RasterSource.open(request.raster)
    bands = resolve_bands(request, source)
    region = request.region or source.window
    for warning in (source.gcp_warning, unchecked_weights_warning(package.name, package.weights_file,
                                                                  package.weights_sha256)):
        if warning:
            callbacks.warning(warning)
    tile, overlap = resolve_tiling(request, callbacks.info, callbacks.warning, region)
    transform = input_transform(request, bands)
    check_value_range(source, transform, package, callbacks.info)
    require_valid_pixel(source, bands, region, callbacks)  # an all-nodata raster stops here, in seconds
    return source, bands, region, tile, overlap, transform


@dataclass(frozen=True)
class ClassifyPlan:
    """What a classification run resolved before its first tile: bands in model order, region, tile size and
    overlap (px), the grid's offset, the input transform and the runtime (``torch`` or ``onnxruntime``). Picklable:
    a worker of a distributed run makes its piece from it (see :mod:`scale`)."""

    request: ClassifyRequest
    bands: tuple[int, ...]
    region: Window
    tile: int
    overlap: int
    offset: tuple[int, int]
    transform: InputTransform
    runtime: str

    @functools.cached_property
    def grid(self) -> TileGrid:
        """The tile grid over the whole region."""
        return TileGrid(self.region, self.tile, self.overlap, offset=self.offset)

    @property
    def outputs(self) -> dict[str, str]:
        """The requested outputs: ``{"probabilities": path, "classes": path}`` (only those asked for)."""
        paths = {"probabilities": self.request.probabilities_path, "classes": self.request.classes_path}
        return {key: path for key, path in paths.items() if path}

    def mask_rules(self) -> list:
        """The extra validity rules of the request (the NDWI mask)."""
        m = self.request.ndwi
        return [] if m is None else [ndwi_rule(m.green_band, m.nir_band, m.threshold, m.keep)]


def plan_classification(request: ClassifyRequest, callbacks: Callbacks) -> ClassifyPlan:
    """Check the request and resolve everything the run needs (an ONNX export is made here when the runtime needs
    one); every input error surfaces here, before any tile."""
    package = request.package
    check_task(package, "pixel_classification")
    if not (request.classes_path or request.probabilities_path):
        raise DeepRasterError("No output was requested: choose a class raster, a probability raster, or both.")
    for path in (request.classes_path, request.probabilities_path):
        if path:
            check_writable(path)
    source, bands, region, tile, overlap, transform = prepare_input(request, callbacks)
    margin = package.edge_margin if request.edge_margin is None else request.edge_margin
    offset = request.grid_offset
    if not 0 <= margin < tile - overlap:
        raise DeepRasterError(f"Edge margin {margin} px does not fit tiles of {tile} px with {overlap} px overlap: "
                              f"choose 0 to {tile - overlap - 1} px.")
    if offset == (0, 0) and margin > 0:
        offset = (margin, margin)  # as ukis-csmask pads its input: the grid starts before the top and left edges
    runtime = resolve_runtime(package, request.runtime, trusted=request.trusted,
                              sample=lambda: sample_tile(source, region, tile, transform), info=callbacks.info,
                              warning=callbacks.warning)
    return ClassifyPlan(request, tuple(bands), region, tile, overlap, offset, transform, runtime)


def plan_predictor(plan: ClassifyPlan, threads: int | None = None, early: Any = None) -> tuple[Predict, str]:
    """The plan's predictor (with test-time augmentation when asked) and where it runs, for the log. ``early``: a
    predictor :func:`~models.runtimes.early_onnx_predictor` started for this run (taken when it fits)."""
    request = plan.request
    predictor, device = make_predictor(request.package, plan.runtime, request.device, tile=plan.tile,
                                       batch_size=request.batch_size, half=request.half, trusted=request.trusted,
                                       threads=threads, early=early)
    if request.tta:
        from ..tiling.predictor import TTAPredictor

        predictor = TTAPredictor(predictor)
    return predictor, device


def classification_run(plan: ClassifyPlan, predictor: Predict, callbacks: Callbacks, part: Window | None = None,
                       outputs: dict[str, str] | None = None) -> TiledRun:
    """The engine run of ``plan`` writing ``outputs`` (default: the plan's), or only the window ``part`` of them
    (output pixels, see :class:`~tiling.engine.TiledRun`) into files made for that window."""
    request = plan.request
    source = RasterSource.open(request.raster)
    grid = plan.grid
    reader = StripReader(source, grid, plan.transform, plan.mask_rules())
    window = plan.region if part is None else part.shifted(plan.region.col_off, plan.region.row_off)
    heads = make_heads(request.package, source, window, outputs or plan.outputs, request.probabilities_percent)
    channels = request.package.architecture.out_channels
    try:
        return TiledRun(grid, reader, predictor, channels, heads, request.batch_size, request.blend, callbacks,
                        part=part)
    except BaseException:  # a SIGTERM here: the outputs just opened go (the run cleans up once it has them)
        for head in heads:
            head.abort()
        raise


def classify_raster(request: ClassifyRequest, callbacks: Callbacks | None = None) -> RunStats:
    """Run a pixel-classification package over a raster and write the requested outputs."""
    callbacks = callbacks or Callbacks()
    # the ONNX Runtime session is made while the input is checked (ONNX Runtime releases the GIL meanwhile)
    early = early_onnx_predictor(request.package, request.runtime, request.device, request.batch_size)
    try:
        plan = plan_classification(request, callbacks)
    except BaseException:
        if early is not None:
            early.settle()  # a failed check: the session's thread must not outlive the run (see settle)
        raise
    predictor, device = plan_predictor(plan, early=early)  # settles an early predictor it does not take
    del early
    try:
        callbacks.info(f"Model {request.package.name} on {device}; bands {list(plan.bands)}; tiles {plan.tile} px, "
                       f"overlap {plan.overlap} px"
                       f"{'; test-time augmentation (8 flips / rotations)' if request.tta else ''}.")
        grid = plan.grid
        callbacks.info(f"Coverage factor {coverage_factor(grid):.2f} (pixels computed ÷ pixels output, {len(grid)} "
                       "tiles).")
        return classification_run(plan, predictor, callbacks).run()
    finally:  # a run stopped before its first batch (cancel, a full disk) leaves no session thread behind
        settle = getattr(getattr(predictor, "predict", predictor), "settle", None)
        if settle is not None:
            settle()


def make_heads(package: ModelPackage, source: RasterSource, region: Window, outputs: dict[str, str],
               percent: bool = False) -> list[OutputHead]:
    """The output heads of ``outputs`` (keys ``probabilities`` and ``classes``) over ``region`` (input pixels)."""
    classes = [ClassInfo(c.value, c.name, c.rgb) for c in package.classes]
    heads: list[OutputHead] = []
    made = False
    try:
        if "probabilities" in outputs:
            names = [classes[-1].name] if package.is_binary_sigmoid else [c.name for c in classes]
            heads.append(ProbabilityHead(outputs["probabilities"], source, region, names, percent))
        if "classes" in outputs:
            heads.append(ClassHead(outputs["classes"], source, region, classes,
                                   0.5 if package.is_binary_sigmoid else None))
        made = True
    finally:
        if not made:  # a head that could not be made: the ones already made leave nothing behind
            for head in heads:
                head.abort()
    return heads
