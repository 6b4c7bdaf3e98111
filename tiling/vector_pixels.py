"""Reference geometries → raster pixel positions: points to the pixel under them, polygons to the pixel centres
inside them (all of them, or a seeded random subset up to a cap).

Geometries must already be in the raster's CRS (the Processing adapters reproject them). Positions are integer
pixel columns and rows of the raster; map coordinates are in the raster CRS's units. Uses ``osgeo.ogr`` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from osgeo import gdal, ogr, osr

gdal.UseExceptions()
ogr.UseExceptions()

RASTERIZE_LIMIT = 4_000_000
"""Most cells rasterised for one polygon; larger polygons are scanned on every 3rd, 5th, ... pixel centre."""


def map_to_pixel(geotransform: Sequence[float], x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates → integer pixel (col, row) holding them (may lie outside the raster)."""
    inv = gdal.InvGeoTransform(tuple(geotransform))
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    col = inv[0] + inv[1] * x + inv[2] * y
    row = inv[3] + inv[4] * x + inv[5] * y
    return np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)


def pixel_centres(geotransform: Sequence[float], cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Map coordinates ``(n, 2)`` of the centres of pixels (col, row)."""
    g = geotransform
    c, r = np.asarray(cols, np.float64) + 0.5, np.asarray(rows, np.float64) + 0.5
    return np.column_stack([g[0] + c * g[1] + r * g[2], g[3] + c * g[4] + r * g[5]])


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
    inv = gdal.InvGeoTransform(tuple(geotransform))
    corners = [gdal.ApplyGeoTransform(inv, x, y) for x in (minx, maxx) for y in (miny, maxy)]
    c0 = max(math.floor(min(c for c, _ in corners)), 0)
    c1 = min(math.ceil(max(c for c, _ in corners)), width)
    r0 = max(math.floor(min(r for _, r in corners)), 0)
    r1 = min(math.ceil(max(r for _, r in corners)), height)
    if c1 <= c0 or r1 <= r0:
        return empty
    w, h = c1 - c0, r1 - r0
    step = 1
    while math.ceil(w / step) * math.ceil(h / step) > RASTERIZE_LIMIT:
        step += 2  # odd steps: coarse cell centres fall on fine pixel centres
    nw, nh = math.ceil(w / step), math.ceil(h / step)
    g = geotransform
    origin_x, origin_y = g[0] + c0 * g[1] + r0 * g[2], g[3] + c0 * g[4] + r0 * g[5]
    mem = gdal.GetDriverByName("MEM").Create("", nw, nh, 1, gdal.GDT_Byte)
    mem.SetGeoTransform((origin_x, g[1] * step, g[2] * step, origin_y, g[4] * step, g[5] * step))
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
