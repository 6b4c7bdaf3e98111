"""How a raster is fed to a model, the same in every pipeline (pixel classification, feature extraction): which
raster bands are the model's inputs, the tile size and overlap of the grid, and a check that the raster's values
are in the range the model was trained on.

The same mistake gives the same error type and message whichever tool makes it. Sizes are in input pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..tiling.errors import DeepRasterError
from ..tiling.reader import InputTransform
from ..tiling.source import RasterSource, sample_pixels
from .bands import check_band_numbers, match_bands_by_name
from .errors import BandMappingError
from .spec import ModelPackage

Info = Callable[[str], None]
RANGE_SAMPLE = 64  # the value-range check reads at most RANGE_SAMPLE × RANGE_SAMPLE pixels, spread over the raster


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


def round_tile(tile: int, multiple: int, what: str, info: Info) -> int:
    """``tile`` rounded up to a multiple of ``multiple`` pixels; ``what`` names the constraint in the message
    (e.g. "model's size divisor", "encoder's patch size")."""
    if tile % multiple == 0:
        return tile
    rounded = -(-tile // multiple) * multiple
    info(f"Tile size {tile} px is not a multiple of the {what} ({multiple} px): using {rounded} px.")
    return rounded


def check_overlap(overlap: int, tile: int) -> int:
    """``overlap`` when it fits tiles of ``tile`` pixels (0 to tile − 1); raises :class:`DeepRasterError` otherwise."""
    if not 0 <= overlap < tile:
        raise DeepRasterError(f"Overlap {overlap} px does not fit tiles of {tile} px: choose 0 to {tile - 1} px "
                              "(a quarter to a half of the tile is usual).")
    return overlap


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
