"""Reading the valid pixels of a raster window by window, in bounded memory: the reader under every per-pixel step.

Windows are non-overlapping and aligned to the input's blocks; their size follows from a byte budget (never smaller
than one block of the input). Validity follows the engine's rule (:func:`~tiling.source.pixel_validity`): the
band's nodata value, NaN/±inf in float rasters and the GDAL dataset mask. Positions are in pixels of the input
raster (``col`` to the right, ``row`` downwards).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from osgeo import gdal

from .errors import RasterInputError
from .source import RasterSource, pixel_validity, read_failure
from .window import Window

gdal.UseExceptions()

DEFAULT_BUDGET = 64 * 2**20
"""Bytes of input (raw values, float32 copy and packed pixels) held for one window."""
MAX_STRIP_ROWS = 256
"""Rows per strip when the input is not tiled (the writer's block height)."""


@dataclass(frozen=True)
class PixelBlock:
    """The valid pixels of one window: ``pixels[i]`` is the i-th True of ``valid`` in row-major order."""

    window: Window
    valid: np.ndarray  # (rows, cols) bool
    pixels: np.ndarray  # (n_valid, bands) float32


def plan_window_size(raster_width: int, region_width: int, block: tuple[int, int], n_bands: int, itemsize: int,
                     budget_bytes: int = DEFAULT_BUDGET) -> tuple[int, int]:
    """Window height and width in pixels for reading ``n_bands`` bands within ``budget_bytes``.

    Tiled inputs are read in whole blocks (one block row high, as many blocks wide as fit, at least one: a part of a
    block costs as much to decode as all of it; when whole rows of the region fit, several block rows up to
    :data:`MAX_STRIP_ROWS`). Untiled inputs (blocks of whole rows) are read in strips of up to
    :data:`MAX_STRIP_ROWS` rows, narrowed when even one row of the region is over budget.
    """
    per_pixel = n_bands * (itemsize + 8)  # raw value, float32 copy, packed float32 pixels
    pixels = max(budget_bytes // max(per_pixel, 1), 1)
    block_w, block_h = max(block[0], 1), max(block[1], 1)
    if block_w < raster_width:
        cols = max(pixels // (block_h * block_w), 1) * block_w
        if cols < region_width:
            return block_h, cols
        rows = block_h * max(min(pixels // max(region_width * block_h, 1), MAX_STRIP_ROWS // block_h), 1)
        return rows, cols  # whole rows fit: several block rows per strip
    rows = int(min(MAX_STRIP_ROWS, max(pixels // max(region_width, 1), 1)))
    if 1 < block_h <= rows:
        rows = rows // block_h * block_h
    return rows, int(min(region_width, max(pixels // rows, 1)))


def _cuts(start: int, length: int, step: int) -> list[tuple[int, int]]:
    """``[start, start + length)`` cut at the multiples of ``step`` (raster coordinates): (offset, size) pairs."""
    end = start + length
    edges = [start, *range((start // step + 1) * step, end, step), end]
    return [(a, b - a) for a, b in zip(edges, edges[1:], strict=False) if b > a]


def valid_mask(source: RasterSource, ds: gdal.Dataset, window: Window, raw: np.ndarray,
               bands: Sequence[int]) -> np.ndarray:
    """Validity of ``raw`` ``(bands, rows, cols)`` read from ``window``: the tiled engine's rule (pixel_validity)."""
    return pixel_validity(source, ds, window, {b: raw[i] for i, b in enumerate(bands)})


class PixelReader:
    """Reads windows of chosen bands of a raster with one GDAL handle (use as a context manager).

    Args:
        source: the raster.
        bands: 1-based band numbers, in the order the pixel vectors use.
        region: the pixels to cover (default: the whole raster).
        budget_bytes: input bytes per window (see :func:`plan_window_size`).
    """

    def __init__(self, source: RasterSource, bands: Sequence[int], region: Window | None = None,
                 budget_bytes: int = DEFAULT_BUDGET) -> None:
        if not bands:
            raise RasterInputError("No band chosen. Choose at least one band of the raster.")
        source.check_bands(bands)
        self.source = source
        self.bands = [int(b) for b in bands]
        self.region = region or source.window
        if self.region.intersection(source.window) != self.region or self.region.is_empty:
            raise ValueError(f"region {self.region} is empty or not inside the raster")
        try:
            self.ds = gdal.Open(source.path, gdal.GA_ReadOnly)
        except RuntimeError as exc:
            raise RasterInputError(f"Cannot open {source.path}: {exc}") from exc
        band = self.ds.GetRasterBand(self.bands[0])
        itemsize = gdal.GetDataTypeSize(band.DataType) // 8
        block = tuple(band.GetBlockSize())
        self.tiled = block[0] < source.width
        self.rows, self.cols = plan_window_size(source.width, self.region.width, block, len(self.bands), itemsize,
                                                budget_bytes)

    def strips(self) -> Iterator[tuple[Window, list[Window]]]:
        """Row strips of the region, each with its windows from left to right (aligned to the input's blocks)."""
        r = self.region
        col_cuts = _cuts(r.col_off, r.width, self.cols)
        for row_off, height in _cuts(r.row_off, r.height, self.rows):
            yield (Window(r.col_off, row_off, r.width, height),
                   [Window(c, row_off, w, height) for c, w in col_cuts])

    @property
    def window_count(self) -> int:
        r = self.region
        return len(_cuts(r.row_off, r.height, self.rows)) * len(_cuts(r.col_off, r.width, self.cols))

    def read_array(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """``(bands, rows, cols)`` float32 values (0 where invalid) and the ``(rows, cols)`` validity of a window."""
        try:
            raw = self.ds.ReadAsArray(window.col_off, window.row_off, window.width, window.height,
                                      band_list=self.bands)
            raw = raw.reshape(len(self.bands), window.height, window.width)
            valid = valid_mask(self.source, self.ds, window, raw, self.bands)  # may read the mask band
        except RuntimeError as exc:
            raise read_failure(self.source.path, exc) from exc
        data = raw.astype(np.float32)
        if raw.dtype.kind == "f":  # float64 values beyond float32's range became inf
            valid &= np.isfinite(data).all(axis=0)
        data[:, ~valid] = 0.0
        return data, valid

    def read(self, window: Window) -> PixelBlock:
        """The valid pixels of ``window`` as a ``(pixels, bands)`` float32 array."""
        data, valid = self.read_array(window)
        flat = valid.ravel()
        pixels = np.ascontiguousarray(data.reshape(len(self.bands), -1)[:, flat].T)
        return PixelBlock(window, valid, pixels)

    def window_done(self) -> None:
        """Drop GDAL's cached blocks after a window of a tiled input (no later window reads them again)."""
        if self.tiled:
            self.ds.FlushCache()

    def strip_done(self) -> None:
        """Drop GDAL's cached blocks after a strip (blocks of untiled inputs span the strip's windows)."""
        self.ds.FlushCache()

    def close(self) -> None:
        self.ds = None

    def __enter__(self) -> PixelReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
