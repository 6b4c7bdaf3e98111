"""The input of an encoder: raw raster values → value scale → normalisation (the package's, the pretrained
encoder's or the raster's own statistics), or a whitened PCA to 3 bands for RGB encoders on multispectral rasters."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..tiling.errors import DeepRasterError, RasterInputError
from ..tiling.reader import InputTransform
from ..tiling.source import RasterSource, sample_pixels
from ..tiling.window import Window
from .encoders import EncoderInfo
from .inputs import check_value_scale

if TYPE_CHECKING:
    from .feature_extraction import FeatureRequest

NORMALIZATION_SOURCES = ("auto", "model", "raster", "none")


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
