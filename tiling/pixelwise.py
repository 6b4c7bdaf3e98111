"""Per-pixel functions streamed over a raster, window by window: the loop under every scikit-learn step.

The scikit-learn steps (reduction, clustering, similarity, supervised prediction) treat each pixel on its own, so
they need no tiles, overlap or blending: non-overlapping windows aligned to the input's blocks are read, the VALID
pixels of each window are handed to a function as a ``(pixels, bands)`` float32 array, and its ``(pixels, outputs)``
result is scattered back and streamed to GeoTIFFs (nodata everywhere else). Validity follows the engine's rules
(:class:`~tiling.reader.StripReader`): the band's nodata value, NaN/±inf in float rasters and the GDAL dataset mask.

Memory is bounded whatever the raster's size: one input window (sized from ``budget_bytes``, never smaller than one
block of the input), one strip of output rows (the writer's block height, 256 rows, times the output width) and
GDAL's block cache, emptied after every window of a tiled input (every strip of an untiled one). Sampling draws a
uniform random sample of valid pixels in one pass with a bounded reservoir, and reading values under points reads
only the windows that hold points.

All positions are in pixels of the input raster (``col`` to the right, ``row`` downwards).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from osgeo import gdal

from .allocator import freed_memory_kept
from .engine import Callbacks
from .errors import RasterInputError, RunCancelled
from .grid import Window
from .reader import RasterSource, pixel_validity
from .writer import GeoTiffWriter, RasterSpec

gdal.UseExceptions()

DEFAULT_BUDGET = 64 * 2**20
"""Bytes of input (raw values, float32 copy and packed pixels) held for one window."""
MAX_STRIP_ROWS = 256
"""Rows per strip when the input is not tiled (the writer's block height)."""

PixelFunction = Callable[[np.ndarray], "np.ndarray | Sequence[np.ndarray]"]
"""``(pixels, bands)`` float32 → one ``(pixels, k)`` array per output (a single array for a single output)."""


class SampleSizeError(RasterInputError):
    """More pixels were asked for than the raster has valid pixels."""


@dataclass(frozen=True)
class PixelBlock:
    """The valid pixels of one window: ``pixels[i]`` is the i-th True of ``valid`` in row-major order."""

    window: Window
    valid: np.ndarray  # (rows, cols) bool
    pixels: np.ndarray  # (n_valid, bands) float32


@dataclass(frozen=True)
class PixelOutput:
    """One output raster of :func:`map_pixels`: ``bands`` values per pixel, ``nodata`` where the input is invalid."""

    path: str
    bands: int
    dtype: type | np.dtype
    nodata: float
    descriptions: tuple[str, ...] = ()
    color_table: dict[int, tuple[int, int, int]] | None = None
    category_names: tuple[str, ...] = ()


@dataclass
class PixelRunStats:
    """What :func:`map_pixels` did: windows read, valid and total pixels, wall time in seconds, files written."""

    windows: int = 0
    valid_pixels: int = 0
    pixels: int = 0
    seconds: float = 0.0
    outputs: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class PixelSample:
    """A uniform random sample of valid pixels: values and raster positions (sorted by row, then column)."""

    values: np.ndarray  # (n, bands) float32
    rows: np.ndarray  # (n,) int64
    cols: np.ndarray  # (n,) int64
    valid_count: int  # valid pixels in the sampled region


def sub_callbacks(callbacks: Callbacks | None, start: float, end: float) -> Callbacks:
    """Callbacks reporting progress 0–1 of one stage as ``start``–``end`` of the whole run."""
    cb = callbacks or Callbacks()
    return Callbacks(progress=lambda f: cb.progress(start + (end - start) * min(max(f, 0.0), 1.0)),
                     is_cancelled=cb.is_cancelled, info=cb.info)


def check_cancel(callbacks: Callbacks) -> None:
    """Raise :class:`RunCancelled` when the user asked to stop."""
    if callbacks.is_cancelled():
        raise RunCancelled("The run was cancelled; no output was written.")


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
        except RuntimeError as exc:
            raise RasterInputError(f"Reading {self.source.path} failed: {exc}") from exc
        raw = raw.reshape(len(self.bands), window.height, window.width)
        valid = valid_mask(self.source, self.ds, window, raw, self.bands)
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


def _as_results(result: np.ndarray | Sequence[np.ndarray], outputs: Sequence[PixelOutput], n: int) -> list[np.ndarray]:
    results = [result] if isinstance(result, np.ndarray) else list(result)
    if len(results) != len(outputs):
        raise ValueError(f"the pixel function returned {len(results)} arrays for {len(outputs)} outputs")
    shaped = []
    for res, out in zip(results, outputs, strict=True):
        res = np.asarray(res).reshape(n, -1)
        if res.shape[1] != out.bands:
            raise ValueError(f"the pixel function returned {res.shape[1]} values per pixel for {out.bands} bands")
        shaped.append(res)
    return shaped


def map_pixels(source: RasterSource, bands: Sequence[int], fn: PixelFunction, outputs: Sequence[PixelOutput],
               region: Window | None = None, callbacks: Callbacks | None = None,
               budget_bytes: int = DEFAULT_BUDGET) -> PixelRunStats:
    """Apply ``fn`` to the valid pixels of ``region`` window by window and stream its results to ``outputs``.

    Each output covers ``region`` on the input's grid and CRS; pixels that are invalid in the input are the output's
    nodata. Outputs are written under temporary names and renamed at the end: on error or cancel nothing is left.
    Raises :class:`RasterInputError` when the region has no valid pixel. Freed memory is kept for reuse meanwhile
    (see :mod:`tiling.allocator`).
    """
    with freed_memory_kept():
        return _map_pixels(source, bands, fn, outputs, region, callbacks, budget_bytes)


def _map_pixels(source: RasterSource, bands: Sequence[int], fn: PixelFunction, outputs: Sequence[PixelOutput],
                region: Window | None, callbacks: Callbacks | None, budget_bytes: int) -> PixelRunStats:
    cb = callbacks or Callbacks()
    region = region or source.window
    stats = PixelRunStats()
    start = time.perf_counter()
    writers: list[GeoTiffWriter] = []
    try:
        for out in outputs:
            dtype = np.dtype(out.dtype)
            writers.append(GeoTiffWriter(out.path, RasterSpec(
                width=region.width, height=region.height, bands=out.bands, dtype=dtype,
                geotransform=source.window_geotransform(region), projection=source.projection, nodata=out.nodata,
                band_descriptions=out.descriptions, color_table=out.color_table,
                category_names=out.category_names)))
        with PixelReader(source, bands, region, budget_bytes) as reader:
            total = reader.window_count
            for strip, windows in reader.strips():
                buffers = [np.full((o.bands, strip.height, region.width), o.nodata, dtype=np.dtype(o.dtype))
                           for o in outputs]
                for window in windows:
                    check_cancel(cb)
                    block = reader.read(window)
                    n = block.pixels.shape[0]
                    if n:
                        cols = slice(window.col_off - region.col_off, window.col_end - region.col_off)
                        for buf, res in zip(buffers, _as_results(fn(block.pixels), outputs, n), strict=True):
                            buf[:, :, cols][:, block.valid] = res.T
                    stats.windows += 1
                    stats.valid_pixels += n
                    cb.progress(stats.windows / total)
                    reader.window_done()
                for writer, buf in zip(writers, buffers, strict=True):
                    writer.write(strip.row_off - region.row_off, buf)
                reader.strip_done()
        stats.pixels = region.width * region.height
        if stats.valid_pixels == 0:
            raise RasterInputError(
                "The raster has no valid pixel in the processed area (all nodata). Check the nodata value, the "
                "bands and the extent."
            )
        stats.outputs = [w.commit() for w in writers]
    except BaseException:
        for w in writers:
            w.abort()
        raise
    stats.seconds = time.perf_counter() - start
    cb.progress(1.0)
    return stats


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
    if count < n and not (allow_fewer and count):
        where = "in the processing extent" if region and region != source.window else "in the raster"
        raise SampleSizeError(
            f"The sample size ({n} pixels) is larger than the number of valid pixels {where} ({count}). Lower the "
            f"sample size to at most {count}" + (", or check the nodata value and the bands." if count else
                                                  "; the raster has no valid pixel: check the nodata value.")
        )
    order = np.lexsort((cols, rows))
    return PixelSample(values[order], rows[order], cols[order], count)


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
