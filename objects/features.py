"""The features a classification run reads (OGR, no QGIS): a point or polygon layer opened and checked, and each
feature's envelope in the raster's CRS (reprojected when the layer has another CRS), or why it has none.

Envelopes are ``(xmin, xmax, ymin, ymax)`` in map units of the raster's CRS (OGR's order); a point's is zero-sized.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from osgeo import ogr, osr

from ..tiling.errors import DeepRasterError
from ..tiling.grid_match import srs_of

ogr.UseExceptions()

Envelope = tuple[float, float, float, float]
POINTS = {ogr.wkbPoint, ogr.wkbMultiPoint}
POLYGONS = {ogr.wkbPolygon, ogr.wkbMultiPolygon, ogr.wkbCurvePolygon, ogr.wkbMultiSurface}
LINES = {ogr.wkbLineString, ogr.wkbMultiLineString, ogr.wkbCircularString, ogr.wkbCompoundCurve,
         ogr.wkbMultiCurve}
EMPTY, INVALID, NOT_POINT_OR_POLYGON, OUTSIDE = "empty", "invalid", "not a point or polygon", "outside"
"""Why a feature has no envelope: no geometry or an empty one; an invalid polygon (e.g. self-intersecting); another
geometry type; a geometry that cannot be put into the raster's CRS (outside the projection's domain)."""


@dataclass
class FeatureLayer:
    """An OGR layer of points or polygons opened for reading, and the CRS transformation into the raster's CRS
    (None: the same CRS, or one of the two has none)."""

    ds: ogr.DataSource
    layer: ogr.Layer
    srs: osr.SpatialReference | None
    to_raster: osr.CoordinateTransformation | None
    count: int

    def close(self) -> None:
        self.layer = None
        self.ds = None

    def envelope_in_raster_crs(self) -> Envelope | None:
        """The layer's extent in the raster's CRS (None when it cannot be transformed)."""
        xmin, xmax, ymin, ymax = self.layer.GetExtent(force=1)
        if self.to_raster is None:
            return xmin, xmax, ymin, ymax
        try:
            x0, y0, x1, y1 = self.to_raster.TransformBounds(xmin, ymin, xmax, ymax, 21)
        except RuntimeError:
            return None
        return x0, x1, y0, y1

    def features(self) -> Iterator[tuple[ogr.Feature, Envelope | str]]:
        """Every feature in layer order with its envelope in the raster's CRS, or the reason it has none (one of
        :data:`EMPTY`, :data:`INVALID`, :data:`NOT_POINT_OR_POLYGON`, :data:`OUTSIDE`)."""
        self.layer.ResetReading()
        for feature in self.layer:
            yield feature, self._envelope(feature.GetGeometryRef())

    def _envelope(self, geometry: ogr.Geometry | None) -> Envelope | str:
        if geometry is None or geometry.IsEmpty():
            return EMPTY
        kind = ogr.GT_Flatten(geometry.GetGeometryType())
        if kind not in POINTS | POLYGONS:
            return NOT_POINT_OR_POLYGON
        if kind in POLYGONS and not geometry.IsValid():
            return INVALID
        if self.to_raster is not None:
            geometry = geometry.Clone()
            try:
                geometry.Transform(self.to_raster)
            except RuntimeError:
                return OUTSIDE
        return geometry.GetEnvelope()


def open_features(path: str | os.PathLike[str], layer_name: str | None, raster_wkt: str,
                  layer_wkt: str | None = None) -> FeatureLayer:
    """Open the layer ``layer_name`` (None: the first) of a vector file; ``layer_wkt`` overrides the layer's own
    CRS (e.g. the CRS QGIS assigned to it). Raises :class:`DeepRasterError` for a file OGR cannot open, a missing
    layer, a layer without features, and a line layer."""
    try:
        ds = ogr.Open(str(path), 0)
    except RuntimeError as exc:
        raise DeepRasterError(f"Cannot open {path} as a vector layer ({exc}). Choose a point or polygon layer "
                              "(GeoPackage, Shapefile, GeoJSON, ...).") from exc
    if ds is None or ds.GetLayerCount() == 0:
        raise DeepRasterError(f"{path} holds no vector layer. Choose a point or polygon layer.")
    layer = ds.GetLayerByName(layer_name) if layer_name else ds.GetLayer(0)
    if layer is None:
        names = ", ".join(ds.GetLayer(i).GetName() for i in range(ds.GetLayerCount()))
        raise DeepRasterError(f"{path} has no layer named {layer_name!r} (it has {names}).")
    if ogr.GT_Flatten(layer.GetGeomType()) in LINES:
        raise DeepRasterError(f"The layer {layer.GetName()!r} holds lines: Classify objects takes a point or polygon "
                              "layer (a chip is cut around each point, or around each polygon's extent).")
    count = layer.GetFeatureCount()
    if count == 0:
        raise DeepRasterError(f"The layer {layer.GetName()!r} ({path}) has no features: choose a layer with the "
                              "points or polygons to classify.")
    srs = srs_of(layer_wkt) if layer_wkt else layer.GetSpatialRef()
    if srs is not None:
        srs = srs.Clone()
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    raster_srs = srs_of(raster_wkt)
    transform = None
    if srs is not None and raster_srs is not None and not srs.IsSame(raster_srs):
        transform = osr.CoordinateTransformation(srs, raster_srs)
    return FeatureLayer(ds, layer, srs, transform, count)
