"""Deep features of a raster from a pretrained encoder: the pure-Python pipeline behind "Extract deep features".

It resolves everything a run needs (encoder, bands, value scale and normalisation or a PCA to 3 bands, tile grid
aligned to the encoder's output stride, output raster) from a :class:`FeatureRequest`, checks the disk space, and
hands the work to the shared engine: the same loop as pixel classification, with an output stride. Runs are
resumable: the output is checkpointed block row by block row under a key that hashes every parameter that changes
the result, so a run interrupted by cancel, crash or kill continues when started again with the same parameters,
and gives the same result as an uninterrupted run. No QGIS here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..tiling.callbacks import Callbacks
from ..tiling.engine import RunStats, TiledRun
from ..tiling.errors import DeepRasterError, OutputError, RasterInputError
from ..tiling.grid import TileGrid, output_shape
from ..tiling.outputs import FeatureHead
from ..tiling.pixel_sampling import require_valid_pixel
from ..tiling.reader import InputTransform, StripReader
from ..tiling.source import RasterSource, sample_pixels
from ..tiling.window import Window
from ..tiling.writer import check_writable
from .encoder_registry import get_encoder, resolve_encoder
from .encoders import EncoderInfo, quantize_int8
from .errors import BandMappingError, EncoderError
from .inputs import (
    available_memory,
    check_overlap,
    check_tile_memory,
    check_value_range,
    check_value_scale,
    fit_tile_to_region,
    package_bands,
    round_tile,
)
from .spec import ModelPackage
from .weights import unchecked_weights_warning

NORMALIZATION_SOURCES = ("auto", "model", "raster", "none")
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


def resolve_transform(request: FeatureRequest, source: RasterSource, bands: list[int], enc: EncoderInfo,
                      region: Window, info) -> InputTransform:
    """Raw values → encoder input: value scale, normalisation, optional PCA to 3 whitened components."""
    package = request.package
    scale = request.value_scale
    if scale is None and package is not None:
        scale = package.value_scale
    if scale is None and all(source.dtypes[b - 1] == "Byte" for b in bands):
        scale = 1.0 / 255.0
    offset = request.value_offset if request.value_offset is not None else (package.value_offset if package else 0.0)
    check_value_scale(1.0 if scale is None else scale, offset)
    mode = request.normalization
    if mode not in NORMALIZATION_SOURCES:
        raise DeepRasterError(f"Unknown normalisation {mode!r}: choose one of {', '.join(NORMALIZATION_SOURCES)}.")
    if request.reduce_to_rgb:
        return _pca_transform(request, source, bands, region, scale or 1.0, offset, info)
    if mode == "auto":
        mode = "model" if (package is not None or scale is not None) else "raster"
        if mode == "raster":
            info("No value scale was given for a raster that is not 8-bit: each band is standardised with the mean "
                 "and standard deviation of a sample of the raster. Give the value scale (raster × scale = model "
                 "units) to use the encoder's own normalisation instead.")
    if mode == "raster":
        mean, std = _sample_statistics(request, source, bands, region, scale or 1.0, offset)
        info("Normalisation from the raster: means " + ", ".join(f"{m:.4g}" for m in mean) + "; stds "
             + ", ".join(f"{s:.4g}" for s in std) + ".")
        return InputTransform(tuple(bands), scale or 1.0, offset, tuple(mean), tuple(std))
    shift: tuple[float, ...] = ()
    divisor: tuple[float, ...] = ()
    if mode == "model":
        if package is not None:
            shift, divisor = package.normalization.shift_and_divisor(len(bands))
        else:
            shift, divisor = enc.mean, enc.std
        if scale is None:
            info("No value scale was given: raster values are used as they are before the normalisation.")
    return InputTransform(tuple(bands), scale if scale is not None else 1.0, offset, tuple(shift), tuple(divisor))


def _sample_statistics(request: FeatureRequest, source: RasterSource, bands: list[int], region: Window,
                       scale: float, offset: float) -> tuple[np.ndarray, np.ndarray]:
    return _statistics(sample_pixels(source, bands, region, request.sample_size) * scale + offset, source)


def _statistics(values: np.ndarray, source: RasterSource) -> tuple[np.ndarray, np.ndarray]:
    if values.shape[1] < 16:
        raise RasterInputError(
            f"Only {values.shape[1]} valid pixels were found in a sample of {source.path}: too few to compute "
            "normalisation statistics. Check the nodata value and the extent (is the raster all nodata?)."
        )
    return values.mean(axis=1), np.maximum(values.std(axis=1), 1e-6)


def _pca_transform(request: FeatureRequest, source: RasterSource, bands: list[int], region: Window, scale: float,
                   offset: float, info) -> InputTransform:
    """Standardise the bands, project on their 3 first principal components and whiten them (unit variance)."""
    values = sample_pixels(source, bands, region, request.sample_size) * scale + offset
    mean, std = _statistics(values, source)
    z = (values - mean[:, None]) / std[:, None]
    eigval, eigvec = np.linalg.eigh(np.cov(z))
    order = np.argsort(eigval)[::-1][:3]
    eigval, eigvec = np.maximum(eigval[order], 1e-12), eigvec[:, order]
    signs = np.sign(eigvec[np.abs(eigvec).argmax(axis=0), range(3)])  # a fixed sign: same result on every run
    components = (eigvec * signs).T / np.sqrt(eigval)[:, None]
    explained = eigval / max(np.trace(np.cov(z)), 1e-12)
    info(f"PCA of bands {bands} to 3 components before the encoder (fitted on {values.shape[1]} sampled pixels); "
         f"explained variance {', '.join(f'{100 * e:.1f} %' for e in explained)}; components whitened.")
    return InputTransform(tuple(bands), scale, offset, tuple(mean.tolist()), tuple(std.tolist()),
                          mix=tuple(tuple(float(v) for v in row) for row in components))


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


def extract_features(request: FeatureRequest, callbacks: Callbacks | None = None) -> FeatureResult:
    """Run an encoder over a raster and write the feature raster (one band per feature, coarser by the stride)."""
    callbacks = callbacks or Callbacks()
    request = resolve_encoder_request(request)
    notes: list[str] = []

    def info(message: str) -> None:
        notes.append(message)
        callbacks.info(message)

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

    from ..tiling.predictor import TorchPredictor, resolve_device  # torch is imported only when running

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
    if request.int8:
        if device.type == "cpu":
            module = quantize_int8(module, info)
        else:
            info("int8 quantisation runs on the CPU only; on a GPU use half precision instead.")
    if request.half and device.type != "cuda":
        info("Half precision computes on a CUDA GPU only; running in float32 on the CPU.")
    key = run_key(request, source, enc, transform, region, tile, overlap, device.type) if request.resume else None
    predictor = TorchPredictor(module, device, "none", request.half)
    grid = TileGrid(region, tile, overlap, align=enc.stride)
    info(f"Encoder {enc.name} ({enc.kind}, {enc.channels} features, output stride {enc.stride}) on {device}; bands "
         f"{bands}{' → PCA 3' if request.reduce_to_rgb else ''}; {len(grid)} tiles of {tile} px, overlap "
         f"{tile - grid.step} px; output {cols} × {rows} px of {enc.stride}× the input pixel size.")
    metadata = {"DEEPRASTER_ENCODER": enc.name, "DEEPRASTER_ENCODER_SOURCE": enc.source,
                "DEEPRASTER_OUTPUT_STRIDE": str(enc.stride), "DEEPRASTER_TILE_SIZE": str(tile),
                "DEEPRASTER_OVERLAP": str(tile - grid.step), "DEEPRASTER_INPUT_BANDS": ",".join(map(str, bands)),
                "DEEPRASTER_PCA_TO_RGB": "yes" if request.reduce_to_rgb else "no"}
    names = [f"feature {i + 1}" for i in range(enc.channels)]
    head = FeatureHead(request.output, source, region, enc.stride, names, request.float16, key, request.block_size,
                       metadata)
    reader = StripReader(source, grid, transform)
    run = TiledRun(grid, reader, predictor, enc.channels, [head], request.batch_size, request.blend, callbacks,
                   output_stride=enc.stride, batches_within_rows=True, pause_s=request.pause_s)
    stats = run.run()
    return FeatureResult(Path(request.output), stats, enc, bands, transform, tile, tile - grid.step, (rows, cols),
                         notes)
