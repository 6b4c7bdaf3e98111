"""Reading a raster with GDAL, one strip of tiles at a time, ahead of the model.

:class:`RasterSource` checks a raster and describes it (size, bands, georeferencing, nodata). :class:`StripReader`
reads, for each grid row, only the needed bands over the footprint of that row of tiles, turns raw values into
normalised model input (see :class:`InputTransform`), marks invalid pixels (nodata, NaN, GDAL masks, extra mask
rules) and pads what lies outside the raster by reflection. A background thread reads the next strip while the
model works on the current one; it has its own GDAL handle (GDAL datasets are not thread-safe) and drops its
block cache after each read, so memory stays bounded by a few strips whatever the raster size. Raw rows are read
in whole rows of the file's blocks and the rows two strips share are kept (see :class:`RowBuffer`), so each block
of the file is decoded once.
"""

from __future__ import annotations

import copy
import math
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from osgeo import gdal

from .errors import ExtentError, RasterInputError
from .grid import TileGrid, Window

gdal.UseExceptions()

MaskRule = Callable[[dict[int, np.ndarray]], np.ndarray]
"""Extra validity rule: receives raw strip arrays keyed by 1-based band number, returns a bool (rows, cols) mask."""


@dataclass(frozen=True)
class RasterSource:
    """A readable GDAL raster and the facts the engine needs about it."""

    path: str
    width: int
    height: int
    band_count: int
    geotransform: tuple[float, ...]
    projection: str
    descriptions: tuple[str, ...]
    nodata: tuple[float | None, ...]
    dtypes: tuple[str, ...]
    has_dataset_mask: bool

    @classmethod
    def open(cls, path: str) -> RasterSource:
        """Open ``path`` read-only and describe it; raises :class:`RasterInputError` when it is not a raster."""
        try:
            ds = gdal.Open(str(path), gdal.GA_ReadOnly)
        except RuntimeError as exc:
            raise RasterInputError(f"Cannot open {path} as a raster ({exc}). Choose a raster file GDAL can read.") \
                from exc
        if ds is None or ds.RasterCount == 0 or ds.RasterXSize == 0 or ds.RasterYSize == 0:
            raise RasterInputError(f"{path} holds no raster bands. Choose a raster file (GeoTIFF, JP2, VRT, ...).")
        bands = [ds.GetRasterBand(i + 1) for i in range(ds.RasterCount)]
        flags = bands[0].GetMaskFlags()
        return cls(
            path=str(path),
            width=ds.RasterXSize,
            height=ds.RasterYSize,
            band_count=ds.RasterCount,
            geotransform=tuple(ds.GetGeoTransform(can_return_null=True) or (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)),
            projection=ds.GetProjection() or "",
            descriptions=tuple(b.GetDescription() or "" for b in bands),
            nodata=tuple(b.GetNoDataValue() for b in bands),
            dtypes=tuple(gdal.GetDataTypeName(b.DataType) for b in bands),
            has_dataset_mask=bool(flags & (gdal.GMF_PER_DATASET | gdal.GMF_ALPHA))
            and not flags & (gdal.GMF_ALL_VALID | gdal.GMF_NODATA),
        )

    @property
    def window(self) -> Window:
        """The whole raster as a window."""
        return Window(0, 0, self.width, self.height)

    def check_bands(self, bands: Sequence[int]) -> None:
        """Raise when a 1-based band number is outside the raster."""
        bad = [b for b in bands if not 1 <= b <= self.band_count]
        if bad:
            raise RasterInputError(
                f"Band number(s) {', '.join(map(str, bad))} do not exist: {self.path} has {self.band_count} band(s) "
                f"(numbered 1–{self.band_count}). Choose band numbers within that range."
            )

    def window_for_bounds(self, xmin: float, ymin: float, xmax: float, ymax: float) -> Window:
        """The pixels touched by a map rectangle given in the raster's CRS, clipped to the raster.

        Raises :class:`ExtentError` when the rectangle is empty or does not overlap the raster.
        """
        if not (xmax > xmin and ymax > ymin):
            raise ExtentError("The processing extent is empty. Draw or type an extent with a width and a height.")
        inverse = gdal.InvGeoTransform(self.geotransform)
        corners = [gdal.ApplyGeoTransform(inverse, x, y) for x in (xmin, xmax) for y in (ymin, ymax)]
        cols, rows = [c for c, _ in corners], [r for _, r in corners]
        eps = 1e-6  # an extent that ends exactly on a pixel edge does not take the next pixel
        wanted = Window(math.floor(min(cols) + eps), math.floor(min(rows) + eps), 0, 0)
        wanted = Window(wanted.col_off, wanted.row_off, math.ceil(max(cols) - eps) - wanted.col_off,
                        math.ceil(max(rows) - eps) - wanted.row_off)
        window = wanted.intersection(self.window)
        if window.is_empty:
            raise ExtentError(
                f"The processing extent ({xmin:.6g}, {ymin:.6g}, {xmax:.6g}, {ymax:.6g}) does not overlap the raster "
                f"{self.path}. Choose an extent inside the raster, or leave the extent empty to process all of it."
            )
        return window

    def window_geotransform(self, window: Window) -> tuple[float, ...]:
        """The geotransform of a window of this raster (same pixel size, shifted origin)."""
        g = self.geotransform
        return (g[0] + window.col_off * g[1] + window.row_off * g[2], g[1], g[2],
                g[3] + window.col_off * g[4] + window.row_off * g[5], g[4], g[5])


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


def pixel_validity(source: RasterSource, ds: gdal.Dataset, window: Window,
                   by_band: dict[int, np.ndarray]) -> np.ndarray:
    """The validity rule shared by every reader: a pixel of ``window`` is valid when no band (arrays keyed by 1-based
    band number) holds its nodata value, no float band holds NaN or ±inf, and the dataset mask (alpha band or
    per-dataset mask), when the raster has one, marks it valid."""
    valid = np.ones((window.height, window.width), dtype=bool)
    for b, arr in by_band.items():
        nodata = source.nodata[b - 1]
        if arr.dtype.kind == "f":
            valid &= np.isfinite(arr)
        if nodata is not None and not np.isnan(nodata):
            valid &= arr != nodata
    if source.has_dataset_mask:
        mask = ds.GetRasterBand(next(iter(by_band))).GetMaskBand()
        valid &= mask.ReadAsArray(window.col_off, window.row_off, window.width, window.height) > 0
    return valid


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
        self._queue: queue.Queue = queue.Queue(maxsize=max(prefetch, 1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rows: RowBuffer | None = None

    def for_grid(self, grid: TileGrid) -> StripReader:
        """A reader like this one (raster, bands, transform, rules, read-ahead) over another grid, e.g. a panel."""
        other = copy.copy(self)
        other.grid, other.first_row, other._rows, other._thread = grid, 0, None, None
        other._queue = queue.Queue(maxsize=self._queue.maxsize)
        other._stop = threading.Event()
        return other

    def skip_to(self, grid_row: int) -> None:
        """Start the iteration at ``grid_row`` (a resumed run re-reads only what it still needs)."""
        if self._thread is not None:
            raise RuntimeError("skip_to must be called before iterating")
        self.first_row = max(int(grid_row), 0)

    def __iter__(self) -> Iterator[Strip]:
        self._thread = threading.Thread(target=self._produce, name="deepraster-reader", daemon=True)
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
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
        try:
            ds = gdal.Open(self.source.path, gdal.GA_ReadOnly)
            for r in range(self.first_row, len(self.grid.row_starts)):
                if self._stop.is_set() or not self._put(self.read_strip(ds, r)):
                    return
                ds.FlushCache()  # drop this handle's cached blocks: memory must not grow with the raster
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 (handed to the consumer thread, re-raised there)
            if isinstance(exc, RuntimeError):
                exc = RasterInputError(f"Reading {self.source.path} failed: {exc}")
            self._put(exc)

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


def sample_pixels(source: RasterSource, bands: Sequence[int], region: Window | None = None,
                  size: int = 256) -> np.ndarray:
    """Raw values of the valid pixels on a regular grid of at most ``size`` × ``size`` points over ``region``.

    One decimated GDAL read (nearest neighbour; overviews are used when the file has them), so memory is about
    ``size``² × bands whatever the raster size; the sample is the same on every call (no randomness). Nodata, NaN
    and masked pixels are left out. Returns ``(len(bands), n)`` float64.
    """
    source.check_bands(bands)
    region = region or source.window
    bx, by = min(size, region.width), min(size, region.height)
    ds = gdal.Open(source.path, gdal.GA_ReadOnly)
    args = (region.col_off, region.row_off, region.width, region.height)
    raw = ds.ReadAsArray(*args, buf_xsize=bx, buf_ysize=by, band_list=list(bands)).reshape(len(bands), by, bx)
    values = raw.astype(np.float64).reshape(len(bands), -1)
    valid = np.isfinite(values).all(axis=0)
    for i, b in enumerate(bands):
        nodata = source.nodata[b - 1]
        if nodata is not None and not np.isnan(nodata):
            valid &= raw[i].reshape(-1) != nodata
    if source.has_dataset_mask:
        mask = ds.GetRasterBand(bands[0]).GetMaskBand().ReadAsArray(*args, buf_xsize=bx, buf_ysize=by)
        valid &= mask.reshape(-1) > 0
    return values[:, valid]
