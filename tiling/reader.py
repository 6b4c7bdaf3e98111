"""Reading a raster with GDAL, one strip of tiles at a time, ahead of the model.

:class:`StripReader` reads, for each grid row, only the needed bands over the footprint of that row of tiles, turns
raw values into normalised model input (see :class:`InputTransform`), marks invalid pixels (nodata, NaN, GDAL masks,
extra mask rules) and pads what lies outside the raster by reflection. A background thread reads the next strip
while the model works on the current one; it has its own GDAL handle (GDAL datasets are not thread-safe) and drops
its block cache after each read, so memory stays bounded by a few strips whatever the raster size. Raw rows are read
in whole rows of the file's blocks and the rows two strips share are kept (see :class:`RowBuffer`), so each block
of the file is decoded once. The raster itself is described by :class:`~tiling.source.RasterSource`.
"""

from __future__ import annotations

import copy
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from osgeo import gdal

from .errors import RasterInputError
from .grid import TileGrid
from .source import RasterSource, pixel_validity, read_failure
from .window import Window

gdal.UseExceptions()

MaskRule = Callable[[dict[int, np.ndarray]], np.ndarray]
"""Extra validity rule: receives raw strip arrays keyed by 1-based band number, returns a bool (rows, cols) mask."""


@dataclass(frozen=True)
class InputTransform:
    """Raw raster values → model input, per model band: ``((raw · scale + offset) − shift) / divisor``.

    ``bands`` are 1-based raster band numbers in model order. ``scale``/``offset`` convert the raster's encoding to
    model units (e.g. 0.0001 for Sentinel-2 digital numbers → reflectance); ``shift``/``divisor`` are the package's
    normalisation (mean and std, or min and range). Invalid pixels become 0 after normalisation.

    ``mix`` (optional, k rows of len(bands) numbers) then mixes the normalised bands into k model channels,
    ``mix @ x + mix_offset`` per pixel: a projection fitted beforehand, e.g. the principal components that reduce
    many bands to the 3 an RGB encoder takes. Without it the model gets one channel per band.
    """

    bands: tuple[int, ...]
    scale: float = 1.0
    offset: float = 0.0
    shift: tuple[float, ...] = ()
    divisor: tuple[float, ...] = ()
    mix: tuple[tuple[float, ...], ...] = ()
    mix_offset: tuple[float, ...] = ()

    @property
    def channels(self) -> int:
        """Number of model input channels this transform produces."""
        return len(self.mix) if self.mix else len(self.bands)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` (bands, rows, cols) in model band order → float32 normalised array (channels, rows, cols)."""
        x = raw.astype(np.float32, copy=True)
        a = np.float32(self.scale)
        shift = np.asarray(self.shift or (0.0,) * len(self.bands), dtype=np.float32)[:, None, None]
        div = np.asarray(self.divisor or (1.0,) * len(self.bands), dtype=np.float32)[:, None, None]
        # ((x·a + offset) − shift) / div, computed in place: x·(a/div) + (offset − shift)/div
        x *= a / div
        x += (np.float32(self.offset) - shift) / div
        if self.mix:
            matrix = np.asarray(self.mix, dtype=np.float32)
            x = np.tensordot(matrix, x, axes=1)
            if self.mix_offset:
                x += np.asarray(self.mix_offset, dtype=np.float32)[:, None, None]
        return x


@dataclass
class Strip:
    """One grid row of input: normalised data and validity over the row's footprint (padded where off-raster)."""

    grid_row: int
    window: Window
    data: np.ndarray  # (channels, tile, footprint width) float32
    valid: np.ndarray  # (tile, footprint width) bool
    valid_count: int = field(default=0)


_END = object()


class StripReader:
    """Iterates over :class:`Strip` objects for every row of ``grid``, read ahead in a background thread.

    Args:
        source: the raster.
        grid: the tile grid.
        transform: raw → model input conversion (also names the bands to read).
        mask_rules: extra validity rules, each with the band numbers it needs.
        prefetch: number of strips read ahead of the consumer.
    """

    def __init__(self, source: RasterSource, grid: TileGrid, transform: InputTransform,
                 mask_rules: Sequence[tuple[Sequence[int], MaskRule]] = (), prefetch: int = 1) -> None:
        source.check_bands(transform.bands)
        for needed, _ in mask_rules:
            source.check_bands(needed)
        self.source = source
        self.grid = grid
        self.transform = transform
        self.mask_rules = list(mask_rules)
        self.read_bands = sorted({*transform.bands, *(b for needed, _ in mask_rules for b in needed)})
        self.first_row = 0  # grid rows above are not read (a resumed run): see skip_to
        self.end_row: int | None = None  # grid rows from here on are not read (a piece of a run): see skip_to
        self._queue: queue.Queue = queue.Queue(maxsize=max(prefetch, 1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rows: RowBuffer | None = None

    def for_grid(self, grid: TileGrid) -> StripReader:
        """A reader like this one (raster, bands, transform, rules, read-ahead) over another grid, e.g. a panel."""
        other = copy.copy(self)
        other.grid, other.first_row, other.end_row, other._rows, other._thread = grid, 0, None, None, None
        other._queue = queue.Queue(maxsize=self._queue.maxsize)
        other._stop = threading.Event()
        return other

    def skip_to(self, grid_row: int, end_row: int | None = None) -> None:
        """Start the iteration at ``grid_row`` (a resumed run re-reads only what it still needs) and, given
        ``end_row``, stop before that grid row (a piece of a run reads only the rows reaching it)."""
        if self._thread is not None:
            raise RuntimeError("skip_to must be called before iterating")
        self.first_row = max(int(grid_row), 0)
        self.end_row = end_row

    def __iter__(self) -> Iterator[Strip]:
        self._thread = threading.Thread(target=self._produce, name="deepraster-reader", daemon=True)
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the background thread (idempotent)."""
        self._stop.set()
        while self._thread is not None and self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)
        self._thread = None

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        """The reading thread: puts the strips, then the end marker or the error that stopped it (the consumer
        raises it). Whatever ends the thread, the consumer gets a last item and never waits forever."""
        last: object = RasterInputError(f"Reading {self.source.path} stopped unexpectedly.")
        try:
            ds = gdal.Open(self.source.path, gdal.GA_ReadOnly)
            end = len(self.grid.row_starts) if self.end_row is None else min(self.end_row, len(self.grid.row_starts))
            for r in range(self.first_row, end):
                if self._stop.is_set() or not self._put(self.read_strip(ds, r)):
                    return
                ds.FlushCache()  # drop this handle's cached blocks: memory must not grow with the raster
            last = _END
        except RuntimeError as exc:  # GDAL's errors
            last = read_failure(self.source.path, exc)
        except Exception as exc:  # not handled here: handed to the consumer thread, raised there as it is
            last = exc
        finally:
            self._put(last)  # does nothing once the consumer has stopped the reader

    def read_strip(self, ds: gdal.Dataset, grid_row: int) -> Strip:
        """Read, validate, normalise and pad the footprint of one grid row."""
        footprint = self.grid.strip_window(grid_row)
        inside = footprint.intersection(self.source.window)
        t = self.transform
        if inside.is_empty:  # a grid row entirely off the raster (only with shifted test grids)
            return Strip(grid_row, footprint, np.zeros((t.channels, footprint.height, footprint.width), np.float32),
                         np.zeros((footprint.height, footprint.width), bool))
        raw = self._row_buffer(ds, inside).rows(inside.row_off, inside.row_end)
        by_band = {b: raw[i] for i, b in enumerate(self.read_bands)}
        valid = self._validity(ds, inside, by_band)
        data = t.apply(np.stack([by_band[b] for b in t.bands]))
        data[:, ~valid] = 0.0
        pads = ((inside.row_off - footprint.row_off, footprint.row_end - inside.row_end),
                (inside.col_off - footprint.col_off, footprint.col_end - inside.col_end))
        if any(p for pair in pads for p in pair):
            data = np.pad(data, ((0, 0), *pads), mode="reflect" if min(inside.width, inside.height) > 1 else "edge")
            valid = np.pad(valid, pads, mode="constant", constant_values=False)
        return Strip(grid_row, footprint, data, valid, int(valid.sum()))

    def _row_buffer(self, ds: gdal.Dataset, inside: Window) -> RowBuffer:
        rows = self._rows
        if rows is None or rows.ds is not ds or (rows.col_off, rows.width) != (inside.col_off, inside.width):
            rows = self._rows = RowBuffer(ds, self.read_bands, inside.col_off, inside.width)
        return rows

    def _validity(self, ds: gdal.Dataset, inside: Window, by_band: dict[int, np.ndarray]) -> np.ndarray:
        valid = pixel_validity(self.source, ds, inside, by_band)
        for _, rule in self.mask_rules:
            valid &= rule(by_band)
        return valid


class RowBuffer:
    """Raw rows of some bands over a fixed span of columns, read in whole rows of the file's blocks.

    Strips of consecutive grid rows overlap (by the tile overlap) and seldom start on a block edge, so reading each
    strip on its own decodes most blocks of the file twice. This buffer reads each block row once and keeps the
    rows the next strip still needs: it holds at most a strip and one block row. Files whose blocks are taller than
    ``MAX_BLOCK_ROWS`` rows are read row range by row range instead.

    Args:
        ds: the GDAL dataset to read (the buffer flushes its block cache after each read).
        bands: 1-based band numbers, in the order of the arrays returned.
        col_off, width: the columns read, in pixels.
    """

    MAX_BLOCK_ROWS = 1024

    def __init__(self, ds: gdal.Dataset, bands: Sequence[int], col_off: int, width: int) -> None:
        self.ds, self.bands, self.col_off, self.width = ds, list(bands), col_off, width
        block_rows = ds.GetRasterBand(self.bands[0]).GetBlockSize()[1]
        self.block_rows = block_rows if 0 < block_rows <= self.MAX_BLOCK_ROWS else 1
        self.top = self.bottom = 0  # raster rows [top, bottom) are held
        self.data = np.empty((len(self.bands), 0, width))

    def rows(self, row_off: int, row_end: int) -> np.ndarray:
        """Raw ``(bands, row_end − row_off, width)`` values of raster rows ``[row_off, row_end)``; rows above
        ``row_off`` are dropped (the next call should not start above this one's start)."""
        if not self.top <= row_off <= self.bottom:
            self.top = self.bottom = row_off
            self.data = self.data[:, :0]
        if row_end > self.bottom:
            b = self.block_rows
            end = min(max(-(-row_end // b) * b, row_end), self.ds.RasterYSize)
            new = self.ds.ReadAsArray(self.col_off, self.bottom, self.width, end - self.bottom,
                                      band_list=self.bands).reshape(len(self.bands), end - self.bottom, self.width)
            self.ds.FlushCache()  # the blocks are in ``new`` now: GDAL's cache must not grow with the raster
            kept = self.data[:, row_off - self.top:]
            self.data = np.concatenate([kept, new], axis=1) if kept.shape[1] else new
            self.top, self.bottom = row_off, end
        elif row_off > self.top:
            self.data, self.top = self.data[:, row_off - self.top:], row_off
        return self.data[:, :row_end - row_off]


def ndwi_rule(green_band: int, nir_band: int, threshold: float, keep: str) -> tuple[tuple[int, int], MaskRule]:
    """A mask rule from the NDWI = (green − NIR) / (green + NIR) (McFeeters 1996), on raw values.

    ``keep="water"`` keeps pixels with NDWI ≥ ``threshold`` (land becomes nodata); ``keep="land"`` the others.
    Pixels where green + NIR is 0 (NDWI undefined) are masked out.
    """
    if keep not in ("water", "land"):
        raise ValueError(f"keep must be 'water' or 'land', got {keep!r}")

    def rule(bands: dict[int, np.ndarray]) -> np.ndarray:
        g = bands[green_band].astype(np.float32)
        n = bands[nir_band].astype(np.float32)
        total = g + n
        with np.errstate(divide="ignore", invalid="ignore"):
            ndwi = (g - n) / total
        defined = total != 0
        return defined & (ndwi >= threshold) if keep == "water" else defined & (ndwi < threshold)

    return (green_band, nir_band), rule
