"""Detected boxes as polygons in a GeoPackage, written with OGR under a temporary name and published with the run
(:mod:`tiling.transaction`): a failed or cancelled run leaves no file, and an older output stays as it was."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from osgeo import ogr, osr

from ..models.detectors import Detections
from ..models.spec import ClassSpec
from ..tiling.errors import OutputError
from ..tiling.transaction import Move, stage

ogr.UseExceptions()
FIELDS = (("class_value", ogr.OFTInteger), ("class_name", ogr.OFTString), ("confidence", ogr.OFTReal))


def box_rings(boxes: np.ndarray, geotransform: Sequence[float]) -> np.ndarray:
    """The four corners of each pixel box in map coordinates: ``(K, 4, 2)`` (x, y), clockwise from the top-left
    corner (rotated geotransforms give rotated rectangles)."""
    g = geotransform
    px = boxes[:, [0, 2, 2, 0]]
    py = boxes[:, [1, 1, 3, 3]]
    return np.stack([g[0] + px * g[1] + py * g[2], g[3] + px * g[4] + py * g[5]], axis=-1)


class BoxWriter:
    """Appends boxes (raster pixels) as polygons in the raster's CRS, with class value, class name and confidence.

    Args:
        path: the final ``.gpkg``.
        geotransform: the raster's geotransform (pixel → map).
        projection: the raster's CRS as WKT ("" for none).
        classes: the package's class table (names by value).
    """

    def __init__(self, path: str | os.PathLike[str], geotransform: Sequence[float], projection: str,
                 classes: Sequence[ClassSpec]) -> None:
        self.target = Path(path)
        self.temp = self.target.with_name(f".{self.target.name}.{uuid.uuid4().hex[:8]}.partial.gpkg")
        self.geotransform = tuple(geotransform)
        self.names = {c.value: c.name for c in classes}
        self.count = 0
        srs = None
        if projection:
            srs = osr.SpatialReference()
            srs.ImportFromWkt(projection)
            srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        try:
            self.ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(self.temp))
            self.layer = self.ds.CreateLayer(self.target.stem, srs=srs, geom_type=ogr.wkbPolygon,
                                             options=["SPATIAL_INDEX=YES"])
            for name, kind in FIELDS:
                self.layer.CreateField(ogr.FieldDefn(name, kind))
        except RuntimeError as exc:
            self.abort()
            raise OutputError(f"Cannot write {self.target}: {exc}. Choose a folder you can write to.") from exc
        self.defn = self.layer.GetLayerDefn()

    def write(self, found: Detections) -> None:
        """Append the boxes of one finished row (one OGR transaction)."""
        rings = box_rings(found.boxes, self.geotransform)
        self.layer.StartTransaction()
        for corners, score, label in zip(rings, found.scores, found.labels, strict=True):
            ring = ogr.Geometry(ogr.wkbLinearRing)
            for x, y in (*corners, corners[0]):
                ring.AddPoint_2D(float(x), float(y))
            polygon = ogr.Geometry(ogr.wkbPolygon)
            polygon.AddGeometry(ring)
            feature = ogr.Feature(self.defn)
            feature.SetGeometry(polygon)
            feature.SetField("class_value", int(label))
            feature.SetField("class_name", self.names.get(int(label), str(int(label))))
            feature.SetField("confidence", float(score))
            self.layer.CreateFeature(feature)
        self.layer.CommitTransaction()
        self.count += len(found)

    def commit(self) -> Path:
        """Close the file and publish it (at the end of the run's transaction, if any); returns the final path."""
        self.layer = self.defn = None
        self.ds = None  # closes the GeoPackage (its -wal / -shm journal files go with it)
        stage([Move(self.temp, self.target)])
        return self.target

    def abort(self) -> None:
        """Close and remove the temporary file (idempotent)."""
        self.layer = self.defn = None
        self.ds = None
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.temp}{suffix}").unlink(missing_ok=True)
