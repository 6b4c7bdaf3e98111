"""Drawing pixels from a raster in one pass and bounded memory: a uniform random sample of valid pixels (a bounded
reservoir keyed by position, so the sample does not depend on the windowing) and the values under given pixel
positions (only the windows that hold points are read). Positions are in pixels of the input raster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .callbacks import Callbacks, check_cancel
from .errors import RasterInputError
from .pixel_reader import DEFAULT_BUDGET, PixelReader
from .source import RasterSource, grid_windows, pixel_validity, read_failure, sample_pixels
from .window import Window


class SampleSizeError(RasterInputError):
    """More pixels were asked for than the raster has valid pixels."""


@dataclass(frozen=True)
class PixelSample:
    """A uniform random sample of valid pixels: values and raster positions (sorted by row, then column)."""

    values: np.ndarray  # (n, bands) float32
    rows: np.ndarray  # (n,) int64
    cols: np.ndarray  # (n,) int64
    valid_count: int  # valid pixels in the sampled region


_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that scatters neighbouring integers uniformly."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def pixel_keys(rows: np.ndarray, cols: np.ndarray, raster_width: int, seed: int) -> np.ndarray:
    """A pseudo-random uint64 key per pixel, a function of (seed, position) only: distinct pixels, distinct keys.

    The pixels with the ``n`` smallest keys are a uniform random sample without replacement; because the key does
    not depend on how the raster is cut into windows, neither does the sample.
    """
    salt = _mix(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) * _GOLDEN + _GOLDEN)[0]
    index = rows.astype(np.uint64) * np.uint64(raster_width) + cols.astype(np.uint64)
    return _mix(index + salt)


def sample_valid_pixels(source: RasterSource, bands: Sequence[int], n: int, seed: int = 0,
                        region: Window | None = None, callbacks: Callbacks | None = None,
                        budget_bytes: int = DEFAULT_BUDGET, allow_fewer: bool = False) -> PixelSample:
    """A uniform random sample of ``n`` valid pixels of ``region``, drawn in one pass in bounded memory.

    The reservoir keeps the ``n`` pixels with the smallest :func:`pixel_keys`; memory is ``n × bands`` float32 plus
    one window. The same ``seed`` gives the same sample. Raises :class:`SampleSizeError` when ``n`` exceeds the
    number of valid pixels, unless ``allow_fewer`` (then all valid pixels are returned; at least one is needed).
    """
    if n < 1:
        raise SampleSizeError(f"The sample size must be at least 1 pixel (got {n}).")
    cb = callbacks or Callbacks()
    keys = np.empty(0, np.uint64)
    values = np.empty((0, len(bands)), np.float32)
    rows = cols = np.empty(0, np.int64)
    count = 0
    with PixelReader(source, bands, region, budget_bytes) as reader:
        total, done = reader.window_count, 0
        for _, windows in reader.strips():
            for window in windows:
                check_cancel(cb)
                block = reader.read(window)
                r, c = np.nonzero(block.valid)
                r, c = r + window.row_off, c + window.col_off
                k = pixel_keys(r, c, source.width, seed)
                count += k.size
                px = block.pixels
                if keys.size >= n:  # only pixels that beat the largest kept key can enter
                    keep = k < keys.max()
                    k, r, c, px = k[keep], r[keep], c[keep], px[keep]
                if k.size:
                    keys, values = np.concatenate([keys, k]), np.concatenate([values, px])
                    rows, cols = np.concatenate([rows, r]), np.concatenate([cols, c])
                    if keys.size > n:
                        best = np.argpartition(keys, n - 1)[:n]
                        keys, values, rows, cols = keys[best], values[best], rows[best], cols[best]
                done += 1
                cb.progress(done / total)
                reader.window_done()
            reader.strip_done()
    if count == 0:
        where = "processing extent" if region and region != source.window else "raster"
        raise SampleSizeError(
            f"The {where} has no valid pixel in the chosen bands: every pixel is nodata, NaN or masked. Check the "
            f"raster's nodata value and the bands, or choose an extent that holds data."
        )
    if count < n and not allow_fewer:
        where = "in the processing extent" if region and region != source.window else "in the raster"
        raise SampleSizeError(
            f"The sample size ({n} pixels) is larger than the number of valid pixels {where} ({count}). Lower the "
            f"sample size to at most {count}, or choose a larger raster or extent."
        )
    order = np.lexsort((cols, rows))
    return PixelSample(values[order], rows[order], cols[order], count)


PROBE_PX = 64
"""Side of the windows :func:`require_valid_pixel` reads first, in pixels."""


def probe_windows(region: Window, size: int = PROBE_PX) -> list[Window]:
    """Windows of at most ``size`` px centred on the region and on each of its four quarters."""
    return grid_windows(region, 1, size) + grid_windows(region, 2, size)


def require_valid_pixel(source: RasterSource, bands: Sequence[int], region: Window | None = None,
                        callbacks: Callbacks | None = None, budget_bytes: int = DEFAULT_BUDGET) -> None:
    """Raise :class:`RasterInputError` when ``region`` holds no valid pixel, before any work is done on it.

    Fast where it matters: five 64 px windows (the centre of the region and of its quarters, a few file blocks
    each) find a valid pixel on most rasters; then a small decimated sample (which decodes every block of a file
    without overviews); otherwise the windows are read in order until one holds a valid pixel, and windows GDAL
    reports as never written (sparse files) are skipped when every band has a nodata value (they read as nodata).
    """
    region = region or source.window
    if any(sample_pixels(source, bands, probe, size=PROBE_PX).size for probe in probe_windows(region)):
        return
    if sample_pixels(source, bands, region, size=64).size:
        return
    cb = callbacks or Callbacks()
    skip_empty = all(source.nodata[b - 1] is not None for b in bands)
    # a pixel is valid only where the first band is: that band alone is read, and every band only in windows where
    # it has a valid pixel (an all-nodata raster is then read once, one band)
    with PixelReader(source, bands[:1], region, budget_bytes) as first, \
            PixelReader(source, bands, region, budget_bytes) as every:
        for _, windows in first.strips():
            for window in windows:
                check_cancel(cb)
                if skip_empty and _never_written(first.ds, bands, window):
                    continue
                if _first_band_valid(first, window) and every.read_array(window)[1].any():
                    return
    where = "processing extent" if region and region != source.window else "raster"
    raise RasterInputError(f"The {where} has no valid pixel in the chosen bands: every pixel is nodata, NaN or masked, "
                           "so there is nothing to process. Check the raster's nodata value, the bands and the extent.")


def _first_band_valid(reader: PixelReader, window: Window) -> bool:
    """Whether the reader's one band has a valid pixel in ``window`` (raw values, no conversion: a fast scan)."""
    try:
        raw = reader.ds.GetRasterBand(reader.bands[0]).ReadAsArray(window.col_off, window.row_off, window.width,
                                                                    window.height)
    except RuntimeError as exc:
        raise read_failure(reader.source.path, exc) from exc
    return bool(pixel_validity(reader.source, reader.ds, window, {reader.bands[0]: raw}).any())


def _never_written(ds, bands: Sequence[int], window: Window) -> bool:
    """True when GDAL reports no data block of ``window`` as ever written, in every band (a sparse file)."""
    from osgeo import gdal

    empty = gdal.GDAL_DATA_COVERAGE_STATUS_EMPTY  # alone: no block written (DATA or UNIMPLEMENTED: read it)
    for b in bands:
        flags, _ = ds.GetRasterBand(b).GetDataCoverageStatus(window.col_off, window.row_off, window.width,
                                                            window.height)
        if flags != empty:
            return False
    return True


def values_at_points(source: RasterSource, bands: Sequence[int], cols: np.ndarray, rows: np.ndarray,
                     callbacks: Callbacks | None = None,
                     budget_bytes: int = DEFAULT_BUDGET) -> tuple[np.ndarray, np.ndarray]:
    """Band values under pixel positions, reading only the windows that hold points.

    Args:
        cols, rows: integer pixel positions (any order, repeats allowed); positions outside the raster are allowed.

    Returns:
        ``(values, valid)``: ``(points, bands)`` float32 (NaN where not valid) and a bool per point, False for points
        outside the raster or on an invalid pixel (nodata, NaN, masked).
    """
    cb = callbacks or Callbacks()
    cols, rows = np.asarray(cols, np.int64).ravel(), np.asarray(rows, np.int64).ravel()
    if cols.shape != rows.shape:
        raise ValueError("cols and rows must have the same length")
    values = np.full((cols.size, len(bands)), np.nan, np.float32)
    valid = np.zeros(cols.size, bool)
    inside = np.flatnonzero((cols >= 0) & (cols < source.width) & (rows >= 0) & (rows < source.height))
    if inside.size == 0:
        return values, valid
    with PixelReader(source, bands, None, budget_bytes) as reader:
        cells_per_row = math.ceil(source.width / reader.cols)
        cell = (rows[inside] // reader.rows) * cells_per_row + cols[inside] // reader.cols
        order = np.argsort(cell, kind="stable")
        inside, cell = inside[order], cell[order]
        groups = np.split(inside, np.flatnonzero(np.diff(cell)) + 1)
        for i, group in enumerate(groups):
            check_cancel(cb)
            r, c = rows[group], cols[group]
            window = Window(int(c.min()), int(r.min()), int(c.max() - c.min() + 1), int(r.max() - r.min() + 1))
            data, ok = reader.read_array(window)
            rr, cc = r - window.row_off, c - window.col_off
            good = ok[rr, cc]
            values[group[good]] = data[:, rr[good], cc[good]].T
            valid[group] = good
            cb.progress((i + 1) / len(groups))
            reader.window_done()
    return values, valid
