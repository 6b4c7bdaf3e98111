"""Deep features of a raster from a pretrained encoder: the pure-Python pipeline behind "Extract deep features".

It resolves everything a run needs (encoder, bands, value scale and normalisation or a PCA to 3 bands, tile grid
aligned to the encoder's output stride, output raster) from a :class:`FeatureRequest`, checks the disk space, and
hands the work to the shared engine: the same loop as pixel classification, with an output stride. Runs are
resumable: the output is checkpointed block row by block row under a key that hashes every parameter that changes
the result, so a run interrupted by cancel, crash or kill continues when started again with the same parameters,
and gives the same result as an uninterrupted run. No QGIS here.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..tiling.callbacks import Callbacks
from ..tiling.engine import RunStats, TiledRun
from ..tiling.errors import OutputError
from ..tiling.grid import TileGrid, output_shape
from ..tiling.outputs import FeatureHead
from ..tiling.pixel_sampling import require_valid_pixel
from ..tiling.reader import InputTransform, StripReader
from ..tiling.source import RasterSource
from ..tiling.window import Window
from ..tiling.writer import check_writable
from .encoder_registry import get_encoder, resolve_encoder
from .encoders import EncoderInfo, quantize_int8
from .errors import BandMappingError, EncoderError
from .feature_normalisation import NORMALIZATION_SOURCES as NORMALIZATION_SOURCES
from .feature_normalisation import resolve_transform
from .inputs import (
    available_memory,
    check_overlap,
    check_tile_memory,
    check_value_range,
    fit_tile_to_region,
    package_bands,
    round_tile,
)
from .spec import ModelPackage
from .weights import unchecked_weights_warning

ENGINE_VERSION = 1  # part of the resume key: bump when a change alters results


@dataclass(frozen=True)
class FeatureRequest:
    """One feature-extraction run. Sizes in input pixels; ``None`` means "the encoder's or the package's default".

    Encoder: ``package`` (feature-extraction or segmentation package) or ``timm_model`` with ``weights`` (or
    ``hub_download``). ``stride`` picks a CNN stage (8, 16, 32); a ViT's stride is its patch size.

    Input: ``bands`` (1-based, model order; default: the package's bands by name, or all bands).
    ``reduce_to_rgb`` first reduces the bands to their 3 principal components (fitted on a sample, whitened), for
    RGB encoders on multispectral rasters. ``normalization``: ``auto`` (the package's or the pretrained
    normalisation when the value scale is known, else per-band statistics of the raster), ``model``, ``raster``
    (z-score per band from a sample) or ``none``. ``value_scale``/``value_offset``: raster value × scale + offset =
    model units (reflectance 0–1, or 0–1 intensities for RGB ImageNet models).

    Run: ``int8`` (dynamic quantisation, CPU, ViTs), ``half`` (float16 compute, GPU), ``float16`` (output storage),
    ``pause_s`` after each batch, ``resume`` (checkpoint and continue interrupted runs).
    """

    raster: str
    output: str
    package: ModelPackage | None = None
    timm_model: str | None = None
    weights: str | None = None
    hub_download: bool = False
    stride: int | None = None
    bands: tuple[int, ...] | None = None
    reduce_to_rgb: bool = False
    region: Window | None = None
    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int = 4
    device: str = "auto"
    half: bool = False
    int8: bool = False
    value_scale: float | None = None
    value_offset: float | None = None
    normalization: str = "auto"
    float16: bool = False
    pause_s: float = 0.0
    resume: bool = True
    blend: str = "hann"
    sample_size: int = 256
    block_size: int | None = None
    timm_kwargs: dict = field(default_factory=dict, hash=False)


@dataclass
class FeatureResult:
    """What a run produced and how."""

    path: Path
    stats: RunStats
    encoder: EncoderInfo
    bands: list[int]
    transform: InputTransform
    tile: int
    overlap: int
    shape: tuple[int, int]  # output (rows, cols)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------- resolution


def resolve_encoder_request(request: FeatureRequest) -> FeatureRequest:
    """The request with its encoder named as the registry reads it: a package path or a preset label given as the
    timm model becomes the package or the preset's timm name (see :func:`encoder_registry.resolve_encoder`)."""
    if request.package is not None or not request.timm_model:
        return request
    source = resolve_encoder(request.timm_model)
    if isinstance(source, ModelPackage):
        return replace(request, package=source, timm_model=None)
    return replace(request, timm_model=source)


def resolve_bands(request: FeatureRequest, source: RasterSource) -> list[int]:
    """1-based raster bands fed to the encoder (or to the PCA), in model order."""
    if request.package is not None:
        return package_bands(request.package, source, request.bands)
    bands = list(request.bands or range(1, source.band_count + 1))
    source.check_bands(bands)
    if request.reduce_to_rgb and len(bands) < 3:
        raise BandMappingError(f"Reducing to 3 bands with a PCA needs at least 3 input bands; {len(bands)} given. "
                               "Select more bands, or switch the reduction off.")
    return bands


def build_encoder(request: FeatureRequest, in_channels: int, info):
    """The torch module and :class:`EncoderInfo` of the requested encoder (see :func:`encoder_registry.get_encoder`)."""
    source = request.package if request.package is not None else request.timm_model
    if not source:
        raise EncoderError("No encoder was chosen: give a model package, a timm model name or a preset.")
    return get_encoder(source, in_channels, request.weights, request.stride, request.hub_download,
                       request.timm_kwargs, info)


def resolve_tiling(request: FeatureRequest, enc: EncoderInfo, info, region: Window | None = None) -> tuple[int, int]:
    """Tile size (a multiple of the encoder's size multiple, rounded up with a message; no larger than ``region``
    needs) and overlap in pixels."""
    tile = request.tile_size or enc.default_tile
    package = request.package
    if not request.tile_size and enc.kind == "cnn" and (package is None or package.task != "feature_extraction"):
        # deep CNN stages need context: at least 32 feature pixels a tile (16 at stride 32). Measured on the real
        # scene (bench/bench_features.py): the tiled-vs-whole cosine similarity rises with the tile size, at the
        # same cost per pixel for the same overlap fraction. A feature-extraction package's tile size is kept.
        tile = max(tile, min(32 * enc.stride, 512))
    if enc.fixed_tile and tile != enc.fixed_tile:
        info(f"{enc.name} takes only {enc.fixed_tile} px tiles (its input size is fixed): using {enc.fixed_tile} px.")
        tile = enc.fixed_tile
    what = "encoder's patch size" if enc.kind == "vit" else "encoder's size multiple"
    tile = round_tile(tile, enc.size_multiple, what, info)
    if region is not None and request.tile_size and not enc.fixed_tile:  # a tile the user chose
        tile = fit_tile_to_region(tile, region, max(enc.size_multiple, enc.stride), enc.default_tile, info)
    if request.overlap is not None:
        overlap = request.overlap
    elif package is not None and package.task == "feature_extraction" and package.tile_size == tile:
        overlap = package.overlap
    else:
        # a segmentation package's overlap is chosen for its class output (ukis-csmask: 52 px of 256 px tiles, as its
        # authors tile); its encoder's features get a quarter of the tile, as other CNNs do
        overlap = tile // 4
    check_overlap(overlap, tile)
    s = enc.stride
    used = tile - max((tile - overlap) // s, 1) * s
    if used != overlap:
        info(f"Overlap {overlap} px rounded up to {used} px so that every tile starts on the {s}-px feature grid.")
    return tile, overlap


def check_disk_space(path: str | Path, rows: int, cols: int, bands: int, itemsize: int) -> int:
    """Raise :class:`OutputError` when the output's uncompressed size (an upper bound) exceeds the free space."""
    folder = Path(path).resolve().parent
    need = int(rows * cols * bands * itemsize * 1.02) + (1 << 20)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise OutputError(
            f"Not enough disk space: the feature raster ({cols} × {rows} px × {bands} bands × {itemsize} bytes) may "
            f"need up to {_size(need)} before compression, and {folder} has {_size(free)} free. Free some space, "
            "choose another folder, store float16, or process a smaller extent or with a larger output stride."
        )
    return need


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def run_key(request: FeatureRequest, source: RasterSource, enc: EncoderInfo, transform: InputTransform,
            region: Window, tile: int, overlap: int, device: str) -> str:
    """A hash of everything that changes the result: a resumed run must have the same key."""

    def file_id(path: str | Path | None) -> list | None:
        if not path:
            return None
        p = Path(path).resolve()
        st = p.stat()
        return [str(p), st.st_size, st.st_mtime_ns]

    package = request.package
    identity = {
        "engine": ENGINE_VERSION,
        "raster": file_id(source.path),
        "region": asdict(region),
        "encoder": [enc.name, enc.kind, enc.stride, enc.channels, enc.in_channels, enc.source],
        "weights": file_id(package.weights_file) if package is not None else file_id(request.weights),
        "hub": request.hub_download and not request.weights,
        "timm_kwargs": request.timm_kwargs,
        "transform": asdict(transform),
        "tiling": [tile, overlap, request.blend],
        "compute": [device, request.half, request.int8, request.batch_size],
        "float16": request.float16,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class FeaturePlan:
    """What a feature run resolved before its first tile (picklable: a worker of a distributed run makes its piece
    from it, see :mod:`scale`): the request (encoder resolved), bands in model order, region, tile and overlap (px),
    input transform, encoder, device type, output band names and metadata, resume key (None: not resumable)."""

    request: FeatureRequest
    bands: tuple[int, ...]
    region: Window
    tile: int
    overlap: int
    transform: InputTransform
    encoder: EncoderInfo
    device: str
    names: tuple[str, ...]
    metadata: dict
    key: str | None

    @functools.cached_property
    def grid(self) -> TileGrid:
        """The tile grid over the whole region, aligned to the encoder's output stride."""
        return TileGrid(self.region, self.tile, self.overlap, align=self.encoder.stride)


def plan_features(request: FeatureRequest, callbacks: Callbacks, info=None) -> tuple[FeaturePlan, object]:
    """Check the request and resolve everything the run needs; returns the plan and the encoder module built on the
    way (every input error surfaces here, before any tile). ``info`` defaults to ``callbacks.info``."""
    info = info or callbacks.info
    request = resolve_encoder_request(request)
    check_writable(request.output)
    source = RasterSource.open(request.raster)
    region = request.region or source.window
    package = request.package
    for warning in (source.gcp_warning, package and unchecked_weights_warning(package.name, package.weights_file,
                                                                               package.weights_sha256)):
        if warning:
            callbacks.warning(warning)
    bands = resolve_bands(request, source)
    in_channels = 3 if request.reduce_to_rgb else len(bands)
    if request.package is not None and request.reduce_to_rgb and request.package.architecture.in_channels != 3:
        raise BandMappingError("Reducing to 3 bands with a PCA is for RGB encoders; the package's encoder takes "
                               f"{request.package.architecture.in_channels} bands.")

    from ..tiling.predictor import resolve_device  # torch is imported only when running

    module, enc = build_encoder(request, in_channels, info)
    if enc.in_channels != in_channels:
        raise BandMappingError(f"The encoder takes {enc.in_channels} bands but {in_channels} were selected.")
    require_valid_pixel(source, bands, region, callbacks)  # an all-nodata raster stops here, in seconds
    transform = resolve_transform(request, source, bands, enc, region, info)
    if request.package is not None:
        check_value_range(source, transform, request.package, info)
    tile, overlap = resolve_tiling(request, enc, info, region)
    rows, cols = output_shape(region, enc.stride)
    check_disk_space(request.output, rows, cols, enc.channels, 2 if request.float16 else 4)
    device = resolve_device(request.device)
    check_tile_memory(tile, request.batch_size, device.type, enc.size_multiple, available_memory(device.type))
    key = run_key(request, source, enc, transform, region, tile, overlap, device.type) if request.resume else None
    grid = TileGrid(region, tile, overlap, align=enc.stride)
    info(f"Encoder {enc.name} ({enc.kind}, {enc.channels} features, output stride {enc.stride}) on {device}; bands "
         f"{bands}{' → PCA 3' if request.reduce_to_rgb else ''}; {len(grid)} tiles of {tile} px, overlap "
         f"{tile - grid.step} px; output {cols} × {rows} px of {enc.stride}× the input pixel size.")
    metadata = {"DEEPRASTER_ENCODER": enc.name, "DEEPRASTER_ENCODER_SOURCE": enc.source,
                "DEEPRASTER_OUTPUT_STRIDE": str(enc.stride), "DEEPRASTER_TILE_SIZE": str(tile),
                "DEEPRASTER_OVERLAP": str(tile - grid.step), "DEEPRASTER_INPUT_BANDS": ",".join(map(str, bands)),
                "DEEPRASTER_PCA_TO_RGB": "yes" if request.reduce_to_rgb else "no"}
    names = tuple(f"feature {i + 1}" for i in range(enc.channels))
    return FeaturePlan(request, tuple(bands), region, tile, overlap, transform, enc, device.type, names, metadata,
                       key), module


def feature_predictor(plan: FeaturePlan, module=None, info=lambda message: None):
    """The plan's predictor on its device (the encoder built again when ``module`` is None, quantised to int8 on
    the CPU when asked)."""
    from ..tiling.predictor import TorchPredictor, resolve_device

    request = plan.request
    if module is None:
        module = build_encoder(request, plan.encoder.in_channels, info)[0]
    if request.int8:
        if plan.device == "cpu":
            module = quantize_int8(module, info)
        else:
            info("int8 quantisation runs on the CPU only; on a GPU use half precision instead.")
    if request.half and plan.device != "cuda":
        info("Half precision computes on a CUDA GPU only; running in float32 on the CPU.")
    return TorchPredictor(module, resolve_device(request.device), "none", request.half)


def feature_head(plan: FeaturePlan, source: RasterSource, part: Window | None = None,
                 output: str | None = None) -> FeatureHead:
    """The feature raster of the whole region, or of the output window ``part`` (output pixels) into ``output``."""
    request, s = plan.request, plan.encoder.stride
    if part is None:
        return FeatureHead(request.output, source, plan.region, s, plan.names, request.float16, plan.key,
                           request.block_size, plan.metadata)
    r = plan.region
    c0, r0 = r.col_off + part.col_off * s, r.row_off + part.row_off * s
    window = Window(c0, r0, min(part.width * s, r.col_end - c0), min(part.height * s, r.row_end - r0))
    return FeatureHead(output or request.output, source, window, s, plan.names, request.float16, None, None,
                       plan.metadata)


def feature_run(plan: FeaturePlan, predictor, callbacks: Callbacks, part: Window | None = None,
                output: str | None = None) -> TiledRun:
    """The engine run of ``plan``, or of the output window ``part`` into the file ``output``."""
    request = plan.request
    source = RasterSource.open(request.raster)
    return TiledRun(plan.grid, StripReader(source, plan.grid, plan.transform), predictor, plan.encoder.channels,
                    [feature_head(plan, source, part, output)], request.batch_size, request.blend, callbacks,
                    output_stride=plan.encoder.stride, batches_within_rows=True, pause_s=request.pause_s, part=part)


def extract_features(request: FeatureRequest, callbacks: Callbacks | None = None) -> FeatureResult:
    """Run an encoder over a raster and write the feature raster (one band per feature, coarser by the stride)."""
    callbacks = callbacks or Callbacks()
    notes, info = noted(callbacks)
    plan, module = plan_features(request, callbacks, info)
    stats = feature_run(plan, feature_predictor(plan, module, info), callbacks).run()
    return feature_result(plan, stats, notes)


def noted(callbacks: Callbacks) -> tuple[list[str], Callable[[str], None]]:
    """A list of the run's notes and an ``info`` callable that adds to it and passes the message on."""
    notes: list[str] = []

    def info(message: str) -> None:
        notes.append(message)
        callbacks.info(message)

    return notes, info


def feature_result(plan: FeaturePlan, stats: RunStats, notes: list[str]) -> FeatureResult:
    """What a run of ``plan`` produced."""
    return FeatureResult(Path(plan.request.output), stats, plan.encoder, list(plan.bands), plan.transform, plan.tile,
                         plan.tile - plan.grid.step, output_shape(plan.region, plan.encoder.stride), notes)
