"""Polygons → the raster pixels whose centres lie inside them (all of them, or a seeded random subset up to a cap).
Points need no more than :func:`tiling.window.map_to_pixel`.

Geometries must already be in the raster's CRS (the Processing adapters reproject them). Positions are integer
pixel columns and rows of the raster; map coordinates are in the raster CRS's units. Uses ``osgeo.ogr`` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from osgeo import gdal, ogr, osr

from ..tiling.window import Window, map_to_pixel, strided_geotransform, window_from_bounds, window_geotransform

gdal.UseExceptions()
ogr.UseExceptions()

RASTERIZE_LIMIT = 4_000_000
"""Most cells rasterised for one polygon; larger polygons are scanned on every 3rd, 5th, ... pixel centre."""


def _pixel_srs() -> osr.SpatialReference:
    """A local "CRS" shared by the polygon and the rasterisation grid: both are in the raster's CRS already."""
    srs = osr.SpatialReference()
    srs.SetLocalCS("raster CRS")
    return srs


def _memory_layer(geom: ogr.Geometry, srs: osr.SpatialReference) -> tuple[ogr.DataSource, ogr.Layer]:
    driver = ogr.GetDriverByName("Memory") or ogr.GetDriverByName("MEM")
    ds = driver.CreateDataSource("")
    layer = ds.CreateLayer("polygon", srs=srs, geom_type=ogr.wkbUnknown)
    feature = ogr.Feature(layer.GetLayerDefn())
    feature.SetGeometry(geom)
    layer.CreateFeature(feature)
    return ds, layer


def polygon_pixels(wkb: bytes, geotransform: Sequence[float], size: tuple[int, int], max_pixels: int | None,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a ``size`` = (width, height) raster whose centres lie inside a polygon, as (cols, rows).

    At most ``max_pixels`` (None: all) are returned, drawn at random without replacement with ``rng`` and sorted by
    row then column. A polygon too small to hold a pixel centre gives the pixel under a point on its surface. Parts
    outside the raster are ignored; a polygon entirely outside gives no pixel.
    """
    geom = ogr.CreateGeometryFromWkb(bytes(wkb))
    empty = np.empty(0, np.int64), np.empty(0, np.int64)
    if geom is None or geom.IsEmpty():
        return empty
    width, height = size
    minx, maxx, miny, maxy = geom.GetEnvelope()
    box = window_from_bounds(geotransform, minx, miny, maxx, maxy).intersection(Window(0, 0, width, height))
    if box.is_empty:
        return empty
    c0, r0, c1, r1 = box.col_off, box.row_off, box.col_end, box.row_end
    step = 1
    while math.ceil(box.width / step) * math.ceil(box.height / step) > RASTERIZE_LIMIT:
        step += 2  # odd steps: coarse cell centres fall on fine pixel centres
    mem = gdal.GetDriverByName("MEM").Create("", math.ceil(box.width / step), math.ceil(box.height / step), 1,
                                             gdal.GDT_Byte)
    mem.SetGeoTransform(strided_geotransform(window_geotransform(geotransform, box), step))
    srs = _pixel_srs()
    mem.SetSpatialRef(srs)
    vector, layer = _memory_layer(geom, srs)
    gdal.RasterizeLayer(mem, [1], layer, burn_values=[1])
    rr, cc = np.nonzero(mem.ReadAsArray())
    rows = r0 + rr.astype(np.int64) * step + (step - 1) // 2
    cols = c0 + cc.astype(np.int64) * step + (step - 1) // 2
    keep = (rows < r1) & (cols < c1)
    rows, cols = rows[keep], cols[keep]
    del vector, mem
    if rows.size == 0:
        point = geom.PointOnSurface()
        if point is None or point.IsEmpty():
            return empty
        col, row = map_to_pixel(geotransform, np.array([point.GetX()]), np.array([point.GetY()]))
        if 0 <= col[0] < width and 0 <= row[0] < height:
            return col, row
        return empty
    if max_pixels is not None and rows.size > max_pixels:
        pick = np.sort(rng.choice(rows.size, size=max_pixels, replace=False))
        rows, cols = rows[pick], cols[pick]
    return cols, rows
