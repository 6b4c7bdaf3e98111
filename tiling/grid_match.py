"""Putting a second raster on a first raster's pixel grid: footprints, CRS comparison and lazy GDAL warped VRTs.

Pure GDAL/OSR, no QGIS. Bounds are ``(xmin, ymin, xmax, ymax)`` in map units of the raster's CRS. A raster that
already shares the grid (size, geotransform within 1e-6 pixel, same CRS) is read as it is; otherwise it is warped
(reprojected when both CRS are known and differ) into an in-memory VRT that GDAL reads window by window.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
from osgeo import gdal, osr

from .errors import RasterInputError
from .source import RasterSource, geotransform_of

gdal.UseExceptions()


def bounds(gt: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """Map bounds of a ``width`` × ``height`` raster with geotransform ``gt``."""
    xs = [gt[0] + c * gt[1] + r * gt[2] for c, r in ((0, 0), (width, 0), (0, height), (width, height))]
    ys = [gt[3] + c * gt[4] + r * gt[5] for c, r in ((0, 0), (width, 0), (0, height), (width, height))]
    return min(xs), min(ys), max(xs), max(ys)


def overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    """Whether two bounds share an area (touching edges do not count)."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def srs_of(wkt: str) -> osr.SpatialReference | None:
    """The spatial reference of a WKT string, x/y in GIS order (None when empty)."""
    if not wkt:
        return None
    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def same_grid(ds: gdal.Dataset, target: RasterSource) -> bool:
    """Whether ``ds`` has ``target``'s size, geotransform (within 1e-6 pixel) and CRS (an unknown CRS matches)."""
    if (ds.RasterXSize, ds.RasterYSize) != (target.width, target.height):
        return False
    gt = geotransform_of(ds)
    if not np.allclose(gt, target.geotransform, rtol=0, atol=1e-6 * abs(target.geotransform[1])):
        return False
    a, b = srs_of(ds.GetProjection()), srs_of(target.projection)
    return a is None or b is None or bool(a.IsSame(b))


def footprint_in(ds: gdal.Dataset, target: RasterSource) -> tuple[float, float, float, float]:
    """Bounds of ``ds`` in ``target``'s CRS (transformed when both CRS are known and differ)."""
    own = bounds(geotransform_of(ds), ds.RasterXSize, ds.RasterYSize)
    a, b = srs_of(ds.GetProjection()), srs_of(target.projection)
    if a is not None and b is not None and not a.IsSame(b):
        own = osr.CoordinateTransformation(a, b).TransformBounds(*own, 21)
    return own


def warp_onto(ds: gdal.Dataset, target: RasterSource, resampling: str, output_type: int, dst_nodata: float,
              folder: str | None = None) -> str:
    """A warped VRT (read lazily) of ``ds`` on ``target``'s grid and CRS; pixels it does not cover, and each band's
    own nodata pixels (band by band: a pixel missing in one band only is missing in that band only), are
    ``dst_nodata``. Written in GDAL's memory file system (remove it with :func:`release`), or into ``folder`` when
    other processes must read it (Dask workers)."""
    path = vrt_path("deepraster_warp", folder)
    xmin, ymin, xmax, ymax = bounds(target.geotransform, target.width, target.height)
    a, b = srs_of(ds.GetProjection()), srs_of(target.projection)
    options = {"srcSRS": ds.GetProjection(), "dstSRS": target.projection} if a is not None and b is not None else {}
    warped = gdal.Warp(path, ds, format="VRT", outputBounds=(xmin, ymin, xmax, ymax), width=target.width,
                       height=target.height, resampleAlg=resampling, outputType=output_type, dstNodata=dst_nodata,
                       warpOptions=["UNIFIED_SRC_NODATA=NO"], **options)
    if warped is None:
        raise RasterInputError(f"Cannot resample {ds.GetDescription()} onto the grid of {target.path}: "
                               f"{gdal.GetLastErrorMsg()}")
    warped = None  # the VRT is written when closed
    if not north_up(target.geotransform):
        _set_destination_grid(path, target.geotransform)
    return path


def north_up(gt: Sequence[float]) -> bool:
    """Whether rows run north to south and columns west to east, with no rotation (what ``gdal.Warp``'s output
    bounds make)."""
    return gt[1] > 0 and gt[2] == 0 and gt[4] == 0 and gt[5] < 0


def _set_destination_grid(path: str, gt: Sequence[float]) -> None:
    """Put a warped VRT of the target's size on the target's own geotransform (south-up or rotated grids, which
    output bounds cannot express): the VRT's geotransform and its transformer's destination side are rewritten, so
    that every target pixel samples the source where that pixel lies."""
    handle = gdal.VSIFOpenL(path, "rb")
    try:
        gdal.VSIFSeekL(handle, 0, 2)
        size = gdal.VSIFTellL(handle)
        gdal.VSIFSeekL(handle, 0, 0)
        root = ElementTree.fromstring(gdal.VSIFReadL(1, size, handle))
    finally:
        gdal.VSIFCloseL(handle)
    text = ",".join(repr(float(v)) for v in gt)
    root.find("GeoTransform").text = text
    for element in root.iter("DstGeoTransform"):
        element.text = text
    for element in root.iter("DstInvGeoTransform"):
        element.text = ",".join(repr(float(v)) for v in gdal.InvGeoTransform(list(gt)))
    if path.startswith("/vsimem/"):
        gdal.FileFromMemBuffer(path, ElementTree.tostring(root))
    else:
        Path(path).write_bytes(ElementTree.tostring(root))


def warped_onto(ds: gdal.Dataset, target: RasterSource, resampling: str, output_type: int,
                dst_nodata: float) -> gdal.Dataset:
    """:func:`warp_onto` opened as a dataset (read lazily); its in-memory VRT file is released at once (the open
    dataset keeps what it needs)."""
    path = warp_onto(ds, target, resampling, output_type, dst_nodata)
    try:
        return gdal.Open(path)
    finally:
        release(path)


def vrt_path(prefix: str, folder: str | None = None) -> str:
    """A new VRT file name: in GDAL's memory file system, or in ``folder``."""
    return f"{folder or '/vsimem'}/{prefix}_{uuid.uuid4().hex}.vrt"


def release(path: str) -> None:
    """Remove an in-memory VRT made here (nothing for a real file)."""
    if path.startswith("/vsimem/"):
        gdal.Unlink(path)
