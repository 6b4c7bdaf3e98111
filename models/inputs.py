"""How a raster is fed to a model, the same in every pipeline (pixel classification, feature extraction): which
raster bands are the model's inputs, the tile size and overlap of the grid, and a check that the raster's values
are in the range the model was trained on.

The same mistake gives the same error type and message whichever tool makes it. Sizes are in input pixels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import numpy as np

from ..tiling.errors import DeepRasterError
from ..tiling.reader import InputTransform
from ..tiling.source import RasterSource, sample_pixels
from ..tiling.window import Window
from .bands import check_band_numbers, match_bands_by_name
from .errors import BandMappingError, ModelPackageError
from .spec import TASK_TOOLS, ModelPackage

Info = Callable[[str], None]
RANGE_SAMPLE = 64  # the value-range check reads at most RANGE_SAMPLE × RANGE_SAMPLE pixels, spread over the raster
#: Memory a network needs per input pixel of one call, in bytes: measured 390–440 B for the ukis-csmask
#: EfficientNet-B4 U-Net (float32, CPU, inference mode; tests/test_bad_inputs*.py), rounded up.
MODEL_BYTES_PER_PIXEL = 512
CPU_PIXELS_PER_CALL = 1 << 16  # as tiling.predictor: a CPU call takes whole tiles up to this many pixels


def package_bands(package: ModelPackage, source: RasterSource, bands: Sequence[int] | None = None) -> list[int]:
    """The 1-based raster bands feeding the package's inputs, in model order.

    ``bands`` when given (checked against the model and the raster); else the bands whose descriptions name the
    model's bands; else the package's default band numbers (an Esri model's ExtractBands). Raises
    :class:`BandMappingError` for wrong band numbers, a raster with fewer bands than the model, or names that do not
    match where the package has no default band numbers.
    """
    if bands:
        return check_band_numbers(bands, package.bands, source.band_count)
    if source.band_count < len(package.bands):
        raise BandMappingError(
            f"The model {package.name!r} expects {len(package.bands)} bands ({', '.join(package.band_names)}) "
            f"but {source.path} has only {source.band_count}. Choose a raster with these bands."
        )
    try:
        return match_bands_by_name(package.bands, source.descriptions)
    except BandMappingError:
        defaults = [b.default_band for b in package.bands]
        if all(defaults) and all(d <= source.band_count for d in defaults):
            return list(defaults)
        raise


def check_task(package: ModelPackage, task: str) -> None:
    """Raise :class:`ModelPackageError` unless ``package`` is a ``task`` package; the message names the tool that
    applies the package's own task (a detection package given to Classify pixels, and the reverse)."""
    if package.task == task:
        return
    tool, own = TASK_TOOLS.get(task, task), TASK_TOOLS.get(package.task)
    hint = f" Use \"{own}\" for it." if own else ""
    raise ModelPackageError(
        f"The model package {package.name!r} is a {package.task.replace('_', ' ')} model (task {package.task!r}): "
        f"\"{tool}\" needs a package of task {task!r}.{hint}")


def round_tile(tile: int, multiple: int, what: str, info: Info) -> int:
    """``tile`` rounded up to a multiple of ``multiple`` pixels; ``what`` names the constraint in the message
    (e.g. "model's size divisor", "encoder's patch size")."""
    if tile % multiple == 0:
        return tile
    rounded = -(-tile // multiple) * multiple
    info(f"Tile size {tile} px is not a multiple of the {what} ({multiple} px): using {rounded} px.")
    return rounded


def fit_tile_to_region(tile: int, region: Window, multiple: int, floor: int, info: Info) -> int:
    """``tile`` no larger than needed for ``region``: its longer side rounded up to ``multiple`` pixels, but never
    below ``floor`` (the tile the model expects by default). A larger tile only adds padding (and memory)."""
    limit = -(-max(region.width, region.height, floor) // multiple) * multiple
    if tile <= limit:
        return tile
    info(f"Tile size {tile} px is larger than the {region.width} × {region.height} px to process: using {limit} px "
         "(a larger tile would only add padding and memory).")
    return limit


def available_memory(device_type: str) -> int | None:
    """Bytes of memory free for a run on ``device_type`` ("cpu" or "cuda"); None when it cannot be told."""
    if device_type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None


def check_tile_memory(tile: int, batch: int, device_type: str, multiple: int, available: int | None,
                      calls_at_once: int = 1) -> None:
    """Raise :class:`DeepRasterError` when the model calls running at once on tiles of ``tile`` px would need more
    than ``available`` bytes (estimate: :data:`MODEL_BYTES_PER_PIXEL` per input pixel of a call; a CPU call holds
    whole tiles up to :data:`CPU_PIXELS_PER_CALL` pixels, and ``calls_at_once`` CPU calls may run together (ONNX
    Runtime's streams); a GPU call holds the whole batch). The message names the largest tile that fits."""
    if available is None:
        return
    per_tile = tile * tile
    cuda = device_type == "cuda"
    tiles = batch if cuda else max(1, CPU_PIXELS_PER_CALL // per_tile) * max(1, calls_at_once)
    need = tiles * per_tile * MODEL_BYTES_PER_PIXEL
    if need <= available:
        return
    fits = int(math.sqrt(available / MODEL_BYTES_PER_PIXEL / (batch if cuda else max(1, calls_at_once))))
    fits = max(fits // multiple * multiple, multiple)
    gib = 1024**3
    raise DeepRasterError(
        f"Tiles of {tile} px would need about {need / gib:.1f} GiB of memory in the model, more than the "
        f"{available / gib:.1f} GiB free on the {device_type.upper()}. Choose a tile size of at most {fits} px"
        + (" or a smaller batch size" if cuda or calls_at_once > 1 else "") + " in the advanced parameters."
    )


def check_overlap(overlap: int, tile: int) -> int:
    """``overlap`` when it fits tiles of ``tile`` pixels (0 to tile − 1); raises :class:`DeepRasterError` otherwise."""
    if not 0 <= overlap < tile:
        raise DeepRasterError(f"Overlap {overlap} px does not fit tiles of {tile} px: choose 0 to {tile - 1} px "
                              "(a quarter to a half of the tile is usual).")
    return overlap


def check_training_tile(package: ModelPackage, tile: int, warning: Info) -> None:
    """Warn (the run goes ahead) when ``tile`` is not the tile size the package declares it was trained on: the
    predictions of a convolutional network depend on the context a tile gives, so other sizes can shift them."""
    trained = package.training.tile_size
    if trained is not None and tile != trained:
        warning(f"Tile size {tile} px differs from the {trained} px tiles the model {package.name!r} was trained "
                f"on: its results may differ from the model's own (e.g. other class fractions). Use {trained} px "
                "tiles, and a larger overlap or test-time augmentation for steadier results.")


def check_value_scale(scale: float, offset: float) -> None:
    """Raise :class:`DeepRasterError` unless raster value × ``scale`` + ``offset`` is a usable conversion: both
    finite and the scale not 0 (NaN, ±inf or 0 would turn every pixel into the same value, and the run into a
    meaningless but "successful" one)."""
    if not math.isfinite(scale) or scale == 0:
        raise DeepRasterError(f"The input value scale {scale!r} is not usable: it must be a finite number other than "
                              "0 (raster value × scale = model units, e.g. 0.0001 for Sentinel-2 digital numbers). "
                              "Give such a number, or 0 in the tool's field to use the package's scale.")
    if not math.isfinite(offset):
        raise DeepRasterError(f"The input value offset {offset!r} is not usable: it must be a finite number "
                              "(raster value × scale + offset = model units).")


def check_value_range(source: RasterSource, transform: InputTransform, package: ModelPackage, info: Info) -> None:
    """Warn when the scaled input is far outside the range the model was trained on (a wrong value scale).

    The median of the valid pixels of a decimated read (:func:`deepraster.tiling.reader.sample_pixels`: nodata,
    NaN and pixels outside the dataset mask left out) is compared with the package's ``expected_range``; "far" is
    more than the range's width beyond either end.
    """
    if package.expected_range is None:
        return
    values = sample_pixels(source, transform.bands, size=RANGE_SAMPLE)
    if values.size == 0:
        return
    median = float(np.median(values * transform.scale + transform.offset))
    low, high = package.expected_range
    span = high - low
    if not low - span <= median <= high + span:
        info(
            f"Warning: after scaling by {transform.scale:g} (offset {transform.offset:g}) the input's median is "
            f"{median:.4g}, far outside the range {low:g}–{high:g} the model expects. Check the input value scale."
        )
