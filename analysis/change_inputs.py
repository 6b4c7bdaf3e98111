"""Two rasters of the same place paired pixel by pixel: the second on the first's grid, both in one lazy VRT.

The pair becomes one in-memory VRT on the first raster's grid: the first raster's bands, then the second's (read as
they are when the grid is the same, otherwise through a warped VRT: nearest neighbour for class rasters, their mode
when the second's pixels are 2 × 2 times finer or more, bilinear for feature rasters; reprojected when both CRS are
known). The per-pixel streaming of :mod:`tiling.pixelwise` then
sees one pixel vector ``[first bands…, second bands…]``, and a pixel is valid only where both are (nodata, NaN,
outside the second raster). Nothing is read here; GDAL reads the windows when they are asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html import escape

from osgeo import gdal

from ..tiling.callbacks import Callbacks
from ..tiling.errors import RasterInputError
from ..tiling.grid_match import bounds, footprint_in, overlaps, release, same_grid, srs_of, vrt_path, warp_onto
from ..tiling.source import RasterSource
from .errors import ChangeInputError

gdal.UseExceptions()

CLASS_WARP_NODATA = -(2**31)
"""Nodata of a class raster warped onto the first grid (outside it, or its own nodata); the warp is Float64, which
holds every 32-bit class value (UInt32 included) exactly."""


MODE_FROM = 4.0
"""A class raster whose pixels are this many times smaller (in area) than the first's is resampled by mode."""


@dataclass(frozen=True)
class PairedRasters:
    """The stacked pair: ``source`` (the VRT on the first raster's grid), the band numbers of each date in it,
    and whether the second was resampled."""

    first: RasterSource
    second: RasterSource
    source: RasterSource
    first_bands: tuple[int, ...]
    second_bands: tuple[int, ...]
    resampled: bool

    @property
    def bands(self) -> tuple[int, ...]:
        """Every band of the stack, first date then second."""
        return self.first_bands + self.second_bands


def _check_pair(first: RasterSource, second: RasterSource, ds: gdal.Dataset) -> bool:
    """Raise :class:`ChangeInputError` when the second raster cannot be put on the first's grid; return whether
    it must be resampled."""
    if same_grid(ds, first):  # a CRS missing on one side is taken as the other's on the very same grid
        return False
    if not (first.georeferenced and second.georeferenced) or first.gcps or second.gcps:
        raise ChangeInputError(
            f"{first.path} and {second.path} have no common grid: one of them has no geotransform (or ground "
            "control points only) and their sizes or positions differ. Georeference both (or warp them to one grid "
            "with gdalwarp) and run again.")
    if bool(srs_of(first.projection)) != bool(srs_of(second.projection)):
        known, unknown = (first, second) if first.projection else (second, first)
        raise ChangeInputError(
            f"Different CRS without a common grid: {known.path} has a CRS, {unknown.path} has none, and their grids "
            "differ. Assign the right CRS to the second (Raster > Projections > Assign Projection) and run again.")
    if not overlaps(footprint_in(ds, first), bounds(first.geotransform, first.width, first.height)):
        raise ChangeInputError(
            f"The two rasters do not overlap: {second.path} lies outside {first.path}. Choose two rasters of the same "
            "place.")
    return True


def _class_resampling(first: RasterSource, ds: gdal.Dataset) -> str:
    """``mode`` (the most common class) where the second raster's pixels are at least 2 × 2 times finer than the
    first's: nearest neighbour would take one of them, at random with respect to the ground; else ``near``."""
    xmin, ymin, xmax, ymax = footprint_in(ds, first)
    second_pixel = (xmax - xmin) * (ymax - ymin) / (ds.RasterXSize * ds.RasterYSize)
    g = first.geotransform
    return "mode" if abs(g[1] * g[5] - g[2] * g[4]) >= MODE_FROM * second_pixel else "near"


def _simple_source(path: str, band: int, width: int, height: int) -> str:
    rect = f"xOff='0' yOff='0' xSize='{width}' ySize='{height}'"
    return (f"<SimpleSource><SourceFilename relativeToVRT='0'>{escape(path)}</SourceFilename>"
            f"<SourceBand>{band}</SourceBand><SrcRect {rect}/><DstRect {rect}/></SimpleSource>")


def _stack(first: RasterSource, layers: list[tuple[str, int]], folder: str | None) -> str:
    """A VRT on ``first``'s grid with one band per ``(path, band)`` (same size as ``first``), in memory or in
    ``folder``."""
    path = vrt_path("deepraster_pair", folder)
    vrt = gdal.GetDriverByName("VRT").Create(path, first.width, first.height, 0)
    vrt.SetGeoTransform(first.geotransform)
    if first.projection:
        vrt.SetProjection(first.projection)
    for i, (source_path, band) in enumerate(layers, start=1):
        src_ds = gdal.Open(source_path)  # kept open while its band is used
        src = src_ds.GetRasterBand(band)
        vrt.AddBand(src.DataType)
        out = vrt.GetRasterBand(i)
        out.SetMetadataItem("source_0", _simple_source(source_path, band, first.width, first.height),
                            "new_vrt_sources")
        if src.GetNoDataValue() is not None:
            out.SetNoDataValue(src.GetNoDataValue())
        out.SetDescription(src.GetDescription())
    vrt = None  # written when closed
    return path


@contextmanager
def paired_rasters(first_path: str, second_path: str, classes: bool, callbacks: Callbacks | None = None,
                   folder: str | None = None) -> Iterator[PairedRasters]:
    """The pair as one lazy VRT (see the module docstring); the in-memory files go when the block ends. With
    ``folder`` the VRTs are real files there instead (for Dask workers, which cannot see this process's memory);
    the caller removes the folder.

    ``classes``: band 1 of each raster, integer values, nearest neighbour; otherwise every band (same count in
    both), bilinear. Raises :class:`ChangeInputError` (or :class:`RasterInputError`) for pairs that cannot be
    compared: no overlap, different CRS without a common grid, different band counts, non-integer classes.
    """
    cb = callbacks or Callbacks()
    first, second = RasterSource.open(first_path), RasterSource.open(second_path)
    if classes:
        for src in (first, second):
            if src.dtypes[0] in ("Int64", "UInt64"):
                raise ChangeInputError(
                    f"{src.path} holds 64-bit integers ({src.dtypes[0]}), which class rasters of this algorithm "
                    f"cannot hold. Convert it to 32-bit integers (Raster > Conversion > Translate, output data type "
                    "Int32) and run again.")
            if src.dtypes[0] not in ("Byte", "Int8", "UInt16", "Int16", "UInt32", "Int32"):
                raise ChangeInputError(
                    f"{src.path} holds {src.dtypes[0]} values: class rasters hold whole class numbers. Choose an "
                    "integer class raster, or the feature mode for bands of continuous values.")
            if src.band_count > 1:
                cb.warning(f"{src.path} has {src.band_count} bands: band 1 holds the classes compared.")
    elif first.band_count != second.band_count:
        raise ChangeInputError(
            f"The feature rasters have different band counts: {first.path} has {first.band_count}, {second.path} "
            f"has {second.band_count}. Choose two rasters of the same features (the same bands, e.g. two outputs "
            "of Extract features with the same model).")
    if first.has_dataset_mask or second.has_dataset_mask:
        cb.warning("A mask or alpha band of the inputs is not used: only nodata values and NaN mark missing pixels.")
    try:
        ds = gdal.Open(second.path)
    except RuntimeError as exc:
        raise RasterInputError(f"Cannot open {second.path}: {exc}") from exc
    resample = _check_pair(first, second, ds)
    made: list[str] = []
    try:
        second_path_on_grid = second.path
        if resample:
            method = _class_resampling(first, ds) if classes else "bilinear"
            second_path_on_grid = warp_onto(
                ds, first, method, gdal.GDT_Float64 if classes else gdal.GDT_Float32,
                CLASS_WARP_NODATA if classes else float("nan"), folder)
            made.append(second_path_on_grid)
            how = {"near": "nearest neighbour", "mode": "the most common class of the finer pixels (mode)",
                   "bilinear": "bilinear"}[method]
            cb.info(f"{second.path} resampled onto the grid of {first.path} ({how}).")
        count = 1 if classes else first.band_count
        layers = [(first.path, b) for b in range(1, count + 1)] + \
                 [(second_path_on_grid, b) for b in range(1, count + 1)]
        made.append(_stack(first, layers, folder))
        stacked = RasterSource.open(made[-1])
        yield PairedRasters(first, second, stacked, tuple(range(1, count + 1)),
                            tuple(range(count + 1, 2 * count + 1)), resample)
    finally:
        for path in made:
            release(path)
