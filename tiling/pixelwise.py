"""Per-pixel functions streamed over a raster, window by window: the loop under every scikit-learn step.

The scikit-learn steps (reduction, clustering, similarity, supervised prediction) treat each pixel on its own, so
they need no tiles, overlap or blending: non-overlapping windows aligned to the input's blocks are read, the VALID
pixels of each window are handed to a function as a ``(pixels, bands)`` float32 array, and its ``(pixels, outputs)``
result is scattered back and streamed to GeoTIFFs (nodata everywhere else). Validity follows the engine's rules
(:class:`~tiling.reader.StripReader`): the band's nodata value, NaN/±inf in float rasters and the GDAL dataset mask.

Memory is bounded whatever the raster's size: one input window (sized from ``budget_bytes``, never smaller than one
block of the input), one strip of output rows (the writer's block height, 256 rows, times the output width) and
GDAL's block cache, emptied after every window of a tiled input (every strip of an untiled one).

Reading windows lives in :mod:`tiling.pixel_reader`, sampling and values under points in
:mod:`tiling.pixel_sampling`, progress and cancellation in :mod:`tiling.callbacks`.

All positions are in pixels of the input raster (``col`` to the right, ``row`` downwards).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .allocator import freed_memory_kept
from .callbacks import Callbacks, check_cancel
from .errors import RasterInputError
from .pixel_reader import DEFAULT_BUDGET, PixelReader
from .pixel_sampling import require_valid_pixel
from .source import RasterSource
from .transaction import commit_all
from .window import Window, window_geotransform
from .writer import GeoTiffWriter, RasterSpec

PixelFunction = Callable[[np.ndarray], "np.ndarray | Sequence[np.ndarray]"]
"""``(pixels, bands)`` float32 → one ``(pixels, k)`` array per output (a single array for a single output)."""


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
    count_values: bool = False  # 8-bit outputs: pixels of each value written, in PixelRunStats.value_counts


@dataclass
class PixelRunStats:
    """What :func:`map_pixels` did: windows read, valid and total pixels, wall time in seconds, files written."""

    windows: int = 0
    valid_pixels: int = 0
    pixels: int = 0
    seconds: float = 0.0
    outputs: list[Path] = field(default_factory=list)
    value_counts: list[np.ndarray | None] = field(default_factory=list)  # per output: 256 counts, or None


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
               budget_bytes: int = DEFAULT_BUDGET, require_valid: bool = True) -> PixelRunStats:
    """Apply ``fn`` to the valid pixels of ``region`` window by window and stream its results to ``outputs``.

    Each output covers ``region`` on the input's grid and CRS; pixels that are invalid in the input are the output's
    nodata. Outputs are written under temporary names and renamed at the end: on error or cancel nothing is left.
    Raises :class:`RasterInputError` when the region has no valid pixel, unless ``require_valid`` is False (a piece
    of a distributed run: the whole raster was checked). Freed memory is kept for reuse meanwhile (see
    :mod:`tiling.allocator`).
    """
    with freed_memory_kept():
        return _map_pixels(source, bands, fn, outputs, region, callbacks, budget_bytes, require_valid)


def pixel_writer(out: PixelOutput, region: Window, source: RasterSource) -> GeoTiffWriter:
    """A writer for ``out`` covering ``region`` on the input's grid and CRS."""
    return GeoTiffWriter(out.path, RasterSpec(
        width=region.width, height=region.height, bands=out.bands, dtype=np.dtype(out.dtype),
        geotransform=window_geotransform(source.geotransform, region), projection=source.projection,
        nodata=out.nodata, band_descriptions=out.descriptions, color_table=out.color_table,
        category_names=out.category_names, gcps=source.window_gcps(region), gcp_projection=source.gcp_projection,
        count_values=out.count_values))


def _map_pixels(source: RasterSource, bands: Sequence[int], fn: PixelFunction, outputs: Sequence[PixelOutput],
                region: Window | None, callbacks: Callbacks | None, budget_bytes: int,
                require_valid: bool) -> PixelRunStats:
    cb = callbacks or Callbacks()
    if source.gcp_warning and require_valid:
        cb.warning(source.gcp_warning)
    if require_valid:
        require_valid_pixel(source, bands, region, cb)  # an all-nodata raster stops here, before outputs are made
    region = region or source.window
    stats = PixelRunStats()
    start = time.perf_counter()
    with ExitStack() as uncommitted:  # leaving it by any exception (KeyboardInterrupt too) aborts every writer
        writers = [uncommitted.enter_context(pixel_writer(out, region, source)) for out in outputs]
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
        if stats.valid_pixels == 0 and require_valid:
            raise RasterInputError(
                "The raster has no valid pixel in the processed area (all nodata). Check the nodata value, the "
                "bands and the extent."
            )
        stats.outputs = commit_all(writers)  # all renamed together or none; committed writers leave without aborting
        stats.value_counts = [writer.value_counts for writer in writers]
    stats.seconds = time.perf_counter() - start
    cb.progress(1.0)
    return stats
