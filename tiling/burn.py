"""Polygons burnt into pixel windows one window at a time (GDAL's rasteriser over an in-memory OGR layer).

Shared by the training export (label polygons per chip) and the evaluation (reference polygons per block): a
pixel takes the value of the last polygon that holds its centre; pixels no polygon holds keep the fill value.
Only the polygons touching a window are looked at (a spatial filter), so memory and time follow the window.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from osgeo import gdal, ogr, osr

from .grid_match import bounds

ogr.UseExceptions()


class PolygonBurner:
    """Polygons with a whole-number value each, in the CRS of the rasters they are burnt into.

    Attributes:
        count: polygons kept (empty geometries are left out).
        envelope: ``(xmin, ymin, xmax, ymax)`` around all of them (None when there is none), map units.
    """

    def __init__(self, shapes: Iterable[tuple[ogr.Geometry, int]], projection: str = "") -> None:
        self._srs = osr.SpatialReference(wkt=projection) if projection else None
        self._source = ogr.GetDriverByName("Memory").CreateDataSource("polygons")
        self._layer = self._source.CreateLayer("polygons", self._srs, ogr.wkbUnknown)
        self._layer.CreateField(ogr.FieldDefn("value", ogr.OFTInteger))
        self.count = 0
        self.envelope: tuple[float, float, float, float] | None = None
        for geom, value in shapes:
            if geom is None or geom.IsEmpty():
                continue
            feature = ogr.Feature(self._layer.GetLayerDefn())
            feature.SetGeometry(geom)
            feature.SetField("value", int(value))
            self._layer.CreateFeature(feature)
            self.count += 1
            x0, x1, y0, y1 = geom.GetEnvelope()
            e = self.envelope
            self.envelope = (x0, y0, x1, y1) if e is None else (min(e[0], x0), min(e[1], y0), max(e[2], x1),
                                                                 max(e[3], y1))

    def burn(self, geotransform: Sequence[float], width: int, height: int, fill: int,
             data_type: int = gdal.GDT_Int32) -> np.ndarray:
        """The values of a ``width`` × ``height`` px window with ``geotransform`` (``fill`` where no polygon)."""
        self._layer.SetSpatialFilterRect(*bounds(geotransform, width, height))
        try:
            if self._layer.GetFeatureCount() == 0:
                return np.full((height, width), fill, gdal_array_type(data_type))
            mem = gdal.GetDriverByName("MEM").Create("", width, height, 1, data_type)
            mem.SetGeoTransform(tuple(geotransform))
            if self._srs is not None:
                mem.SetSpatialRef(self._srs)
            band = mem.GetRasterBand(1)
            band.Fill(fill)
            gdal.RasterizeLayer(mem, [1], self._layer, options=["ATTRIBUTE=value"])
            return band.ReadAsArray()
        finally:
            self._layer.SetSpatialFilter(None)


def gdal_array_type(data_type: int) -> np.dtype:
    """The numpy type GDAL reads ``data_type`` bands into."""
    from osgeo import gdal_array

    return np.dtype(gdal_array.GDALTypeCodeToNumericTypeCode(data_type))
