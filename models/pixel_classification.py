"""Applying a pixel-classification package to a raster: the pure-Python pipeline behind "Classify pixels".

It resolves everything a run needs (bands, scaling, grid, mask, outputs) from a :class:`ClassifyRequest` and the
package, then hands the work to the shared engine. No QGIS here: tests, benchmarks and scripts call it directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..tiling.callbacks import Callbacks
from ..tiling.engine import RunStats, TiledRun
from ..tiling.errors import DeepRasterError
from ..tiling.grid import TileGrid
from ..tiling.outputs import ClassHead, ClassInfo, OutputHead, ProbabilityHead
from ..tiling.reader import InputTransform, StripReader, ndwi_rule
from ..tiling.source import RasterSource
from ..tiling.window import Window
from ..tiling.writer import check_writable
from .inputs import check_overlap, check_value_range, package_bands, round_tile
from .spec import ModelPackage


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


def resolve_bands(request: ClassifyRequest, source: RasterSource) -> list[int]:
    """Model input bands as 1-based raster band numbers, in model order (see :func:`inputs.package_bands`)."""
    return package_bands(request.package, source, request.bands)


def resolve_tiling(request: ClassifyRequest, info) -> tuple[int, int]:
    """Tile size and overlap in pixels, with the tile rounded up to the model's size divisor."""
    package = request.package
    tile = round_tile(request.tile_size or package.tile_size, package.size_divisor, "model's size divisor", info)
    return tile, check_overlap(package.overlap if request.overlap is None else request.overlap, tile)


def input_transform(request: ClassifyRequest, bands: list[int]) -> InputTransform:
    """Raw → model-input conversion from the package's scale and normalisation (or the request's override)."""
    package = request.package
    shift, divisor = package.normalization.shift_and_divisor(len(bands))
    return InputTransform(
        bands=tuple(bands),
        scale=package.value_scale if request.value_scale is None else request.value_scale,
        offset=package.value_offset if request.value_offset is None else request.value_offset,
        shift=tuple(shift), divisor=tuple(divisor),
    )


def classify_raster(request: ClassifyRequest, callbacks: Callbacks | None = None) -> RunStats:
    """Run a pixel-classification package over a raster and write the requested outputs."""
    callbacks = callbacks or Callbacks()
    package = request.package
    if not (request.classes_path or request.probabilities_path):
        raise DeepRasterError("No output was requested: choose a class raster, a probability raster, or both.")
    for path in (request.classes_path, request.probabilities_path):
        if path:
            check_writable(path)
    source = RasterSource.open(request.raster)
    bands = resolve_bands(request, source)
    tile, overlap = resolve_tiling(request, callbacks.info)
    region = request.region or source.window
    transform = input_transform(request, bands)
    check_value_range(source, transform, package, callbacks.info)
    rules = []
    if request.ndwi is not None:
        m = request.ndwi
        rules.append(ndwi_rule(m.green_band, m.nir_band, m.threshold, m.keep))

    from ..tiling.predictor import TorchPredictor, resolve_device  # torch is imported only when running
    from .loaders import load_model

    device = resolve_device(request.device)
    predictor = TorchPredictor(load_model(package, trusted=request.trusted), device, package.activation, request.half)
    callbacks.info(f"Model {package.name} on {device}; bands {bands}; tiles {tile} px, overlap {overlap} px.")

    grid = TileGrid(region, tile, overlap, offset=request.grid_offset)
    reader = StripReader(source, grid, transform, rules)
    heads = _make_heads(request, source, region)
    channels = package.architecture.out_channels
    return TiledRun(grid, reader, predictor, channels, heads, request.batch_size, request.blend, callbacks).run()


def _make_heads(request: ClassifyRequest, source: RasterSource, region: Window) -> list[OutputHead]:
    package = request.package
    classes = [ClassInfo(c.value, c.name, c.rgb) for c in package.classes]
    heads: list[OutputHead] = []
    made = False
    try:
        if request.probabilities_path:
            names = [classes[-1].name] if package.is_binary_sigmoid else [c.name for c in classes]
            heads.append(ProbabilityHead(request.probabilities_path, source, region, names,
                                         request.probabilities_percent))
        if request.classes_path:
            heads.append(ClassHead(request.classes_path, source, region, classes,
                                   0.5 if package.is_binary_sigmoid else None))
        made = True
    finally:
        if not made:  # a head that could not be made: the ones already made leave nothing behind
            for head in heads:
                head.abort()
    return heads
