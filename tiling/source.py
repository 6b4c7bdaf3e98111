"""A raster file as the engine sees it: open and describe it, find the pixels of a map extent, tell valid pixels.

:class:`RasterSource` checks a raster and describes it (size, bands, georeferencing, nodata);
:func:`pixel_validity` is the validity rule every reader shares; :func:`sample_pixels` reads a small decimated
sample of valid values (for statistics). All I/O goes through ``osgeo.gdal``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from osgeo import gdal

from .errors import ExtentError, RasterInputError
from .window import Window, window_from_bounds, window_geotransform

gdal.UseExceptions()
IDENTITY = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # what GDAL reports for a raster without georeferencing
UNREFERENCED = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
"""Where QGIS places a raster without a geotransform (rows going down from y = 0): the geotransform such a raster is
read with here, so that an extent drawn on the canvas selects the pixels seen there and outputs overlay the input."""


def pixel_grid_only(gt: tuple[float, ...]) -> bool:
    """Whether a geotransform (of a raster without CRS) only numbers pixels: GDAL's default, or what Deep Raster
    writes for outputs of a raster without georeferencing (:data:`UNREFERENCED`, shifted to an extent's whole pixels
    and scaled by a whole stride: origin x ≥ 0, y ≤ 0)."""
    if gt == IDENTITY:
        return True
    size = gt[1]
    return (gt[2] == gt[4] == 0 and size >= 1 and float(size).is_integer() and gt[5] == -size
            and float(gt[0]).is_integer() and gt[0] >= 0 and float(gt[3]).is_integer() and gt[3] <= 0)


def geotransform_of(ds: gdal.Dataset) -> tuple[float, ...]:
    """The dataset's geotransform, or :data:`UNREFERENCED` when it has none."""
    return tuple(ds.GetGeoTransform(can_return_null=True) or UNREFERENCED)


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
    georeferenced: bool = True
    """False when the file has no geotransform: map coordinates cannot be placed on its pixels."""
    gcps: tuple[tuple[float, float, float, float, float], ...] = ()
    """Ground control points ``(pixel, line, x, y, z)`` of a raster georeferenced by GCPs only."""
    gcp_projection: str = ""

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
        complex_bands = [i + 1 for i, b in enumerate(bands) if gdal.DataTypeIsComplex(b.DataType)]
        if complex_bands:
            raise RasterInputError(
                f"{path} holds complex values ({gdal.GetDataTypeName(bands[complex_bands[0] - 1].DataType)}, e.g. SAR "
                "single-look complex data), which the models and methods here do not read. Convert it to amplitude "
                "or intensity first (Raster calculator: abs of the band, or gdal_translate) and run again.")
        flags = bands[0].GetMaskFlags()
        geotransform = ds.GetGeoTransform(can_return_null=True)
        gcps = () if geotransform else tuple((g.GCPPixel, g.GCPLine, g.GCPX, g.GCPY, g.GCPZ) for g in ds.GetGCPs())
        return cls(
            path=str(path),
            width=ds.RasterXSize,
            height=ds.RasterYSize,
            band_count=ds.RasterCount,
            geotransform=tuple(geotransform or UNREFERENCED),
            projection=ds.GetProjection() or "",
            descriptions=tuple(b.GetDescription() or "" for b in bands),
            nodata=tuple(b.GetNoDataValue() for b in bands),
            dtypes=tuple(gdal.GetDataTypeName(b.DataType) for b in bands),
            has_dataset_mask=bool(flags & (gdal.GMF_PER_DATASET | gdal.GMF_ALPHA))
            and not flags & (gdal.GMF_ALL_VALID | gdal.GMF_NODATA),
            georeferenced=bool(gcps) or bool(geotransform) and not (not ds.GetProjection()
                                                                     and pixel_grid_only(tuple(geotransform))),
            gcps=gcps,
            gcp_projection=ds.GetGCPProjection() if gcps else "",
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
        if self.gcps:
            raise ExtentError(
                f"{self.path} is georeferenced by ground control points only: a processing extent cannot be placed "
                "on its pixels. Leave the extent empty to process all of it, or warp it first (Raster > Projections "
                "> Warp, or gdalwarp) and run on the warped copy.")
        eps = 1e-6  # pixels: an extent that ends exactly on a pixel edge does not take the next pixel
        window = window_from_bounds(self.geotransform, xmin, ymin, xmax, ymax, eps).intersection(self.window)
        if window.is_empty:
            raise ExtentError(
                f"The processing extent ({xmin:.6g}, {ymin:.6g}, {xmax:.6g}, {ymax:.6g}) does not overlap the raster "
                f"{self.path}. Choose an extent inside the raster, or leave the extent empty to process all of it."
            )
        return window

    def window_gcps(self, window: Window, stride: int = 1) -> tuple[tuple[float, float, float, float, float], ...]:
        """The raster's GCPs on the pixel grid of an output covering ``window`` with ``stride`` input pixels per
        output pixel (the same ground points, their pixel positions shifted and scaled)."""
        return tuple(((p - window.col_off) / stride, (line - window.row_off) / stride, x, y, z)
                     for p, line, x, y, z in self.gcps)

    @property
    def gcp_warning(self) -> str | None:
        """What to tell the user about a raster georeferenced by GCPs only (None for any other raster)."""
        if not self.gcps:
            return None
        return (f"{self.path} is georeferenced by {len(self.gcps)} ground control points only (no geotransform): "
                "the outputs get the same points, on the input's pixel grid, and are not warped. For map-aligned "
                "outputs, warp the input first (Raster > Projections > Warp, or gdalwarp).")

    def window_geotransform(self, window: Window) -> tuple[float, ...]:
        """The geotransform of a window of this raster (same pixel size, shifted origin)."""
        return window_geotransform(self.geotransform, window)


def read_failure(path: str, exc: Exception) -> RasterInputError:
    """The error for a GDAL read that failed on a raster that opened: a damaged file or a missing part of it."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return RasterInputError(
        f"Cannot read the pixels of {path} ({detail}). The file is damaged or incomplete (e.g. an interrupted copy or "
        "download), or a file it refers to (a VRT's source) is missing. Check it with gdalinfo -checksum, then copy "
        "or create it again."
    )


def pixel_validity(source: RasterSource, ds: gdal.Dataset, window: Window, by_band: dict[int, np.ndarray],
                   buffer: tuple[int, int] | None = None) -> np.ndarray:
    """The validity rule shared by every reader: a pixel of ``window`` is valid when no band (arrays keyed by 1-based
    band number) holds its nodata value, no float band holds NaN or ±inf, and the dataset mask (alpha band or
    per-dataset mask), when the raster has one, marks it valid.

    ``buffer`` = (width, height) in pixels: the arrays are a decimated read of ``window`` into that many pixels (the
    mask is read the same way); None: full resolution.
    """
    width, height = buffer or (window.width, window.height)
    valid = np.ones((height, width), dtype=bool)
    for b, arr in by_band.items():
        nodata = source.nodata[b - 1]
        if arr.dtype.kind == "f":
            valid &= np.isfinite(arr)
        if nodata is not None and not np.isnan(nodata):
            valid &= arr != nodata
    if source.has_dataset_mask:
        mask = ds.GetRasterBand(next(iter(by_band))).GetMaskBand()
        valid &= mask.ReadAsArray(window.col_off, window.row_off, window.width, window.height,
                                  buf_xsize=width, buf_ysize=height) > 0
    return valid


SAMPLE_GRID = 8
"""Windows per side of the window grid :func:`sample_pixels` reads from large rasters without overviews."""


def sample_pixels(source: RasterSource, bands: Sequence[int], region: Window | None = None,
                  size: int = 256) -> np.ndarray:
    """Raw values of the valid pixels among about ``size`` × ``size`` points spread over ``region``.

    A small region, or a file with overviews, is read once, decimated (nearest neighbour, from the overviews when
    there are some). A large region of a file without overviews is read as a grid of 8 × 8 small full-resolution
    windows instead: a decimated read would decode every block of the file (3.7 s and the whole raster in GDAL's
    block cache for 8192² × 4 float bands, against 0.1 s). Memory is about ``size``² × bands whatever the raster
    size; the sample is the same on every call (no randomness). Nodata, NaN and masked pixels are left out.
    Returns ``(len(bands), n)`` float64.
    """
    source.check_bands(bands)
    region = region or source.window
    try:
        ds = gdal.Open(source.path, gdal.GA_ReadOnly)
        if region.width * region.height <= 16 * size * size or ds.GetRasterBand(bands[0]).GetOverviewCount():
            parts = [_sample_window(source, ds, bands, region, min(size, region.width), min(size, region.height))]
        else:
            parts = [_sample_window(source, ds, bands, w, w.width, w.height)
                     for w in grid_windows(region, SAMPLE_GRID, -(-size // SAMPLE_GRID))]
    except RuntimeError as exc:  # GDAL's errors: a truncated file, a VRT whose source is gone
        raise read_failure(source.path, exc) from exc
    return np.concatenate(parts, axis=1)


def grid_windows(region: Window, per_side: int, side: int) -> list[Window]:
    """``per_side`` × ``per_side`` windows of ``side`` px (less at a small region's edge), centred on a regular
    grid over ``region``."""
    width, height = min(side, region.width), min(side, region.height)
    return [Window(region.col_off + min(region.width - width, max(0, (2 * i + 1) * region.width // (2 * per_side)
                                                                     - width // 2)),
                   region.row_off + min(region.height - height, max(0, (2 * j + 1) * region.height // (2 * per_side)
                                                                      - height // 2)), width, height)
            for j in range(per_side) for i in range(per_side)]


def _sample_window(source: RasterSource, ds: gdal.Dataset, bands: Sequence[int], window: Window, bx: int,
                   by: int) -> np.ndarray:
    """The valid pixels of ``window`` read into a ``bx`` × ``by`` buffer, as ``(len(bands), n)`` float64."""
    args = (window.col_off, window.row_off, window.width, window.height)
    raw = ds.ReadAsArray(*args, buf_xsize=bx, buf_ysize=by, band_list=list(bands)).reshape(len(bands), by, bx)
    valid = pixel_validity(source, ds, window, {b: raw[i] for i, b in enumerate(bands)}, (bx, by)).reshape(-1)
    return raw.astype(np.float64).reshape(len(bands), -1)[:, valid]
