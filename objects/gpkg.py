"""GeoPackage outputs of the object tools, written with OGR under a temporary name and published with the run
(:mod:`tiling.transaction`): a failed or cancelled run leaves no file, and an older output stays as it was.
Detected boxes as polygons (:class:`BoxWriter`), and classified copies of a layer (:class:`LayerCopyWriter`)."""

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
from ..tiling.grid_match import srs_of
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


class StagedGeoPackage:
    """One GeoPackage layer written under a hidden temporary name beside its final path, renamed into place when
    :meth:`commit` is called (at the end of the run's transaction, if any); :meth:`abort` removes it.

    Args:
        path: the final ``.gpkg``.
        srs: the layer's CRS (None: none).
        geom_type: an OGR geometry type.
        fields: the attribute fields, in order.
        options: extra OGR layer creation options (e.g. ``FID=...``).
    """

    def __init__(self, path: str | os.PathLike[str], srs: osr.SpatialReference | None, geom_type: int,
                 fields: Sequence[ogr.FieldDefn], options: Sequence[str] = ()) -> None:
        self.target = Path(path)
        self.temp = self.target.with_name(f".{self.target.name}.{uuid.uuid4().hex[:8]}.partial.gpkg")
        self.count = 0
        try:
            self.ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(self.temp))
            self.layer = self.ds.CreateLayer(self.target.stem, srs=srs, geom_type=geom_type,
                                             options=["SPATIAL_INDEX=YES", *options])
            for field in fields:
                self.layer.CreateField(field)
        except RuntimeError as exc:
            self.abort()
            raise OutputError(f"Cannot write {self.target}: {exc}. Choose a folder you can write to.") from exc
        self.defn = self.layer.GetLayerDefn()

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


class BoxWriter(StagedGeoPackage):
    """Appends boxes (raster pixels) as polygons in the raster's CRS, with class value, class name and confidence.

    Args:
        path: the final ``.gpkg``.
        geotransform: the raster's geotransform (pixel → map).
        projection: the raster's CRS as WKT ("" for none).
        classes: the package's class table (names by value).
    """

    def __init__(self, path: str | os.PathLike[str], geotransform: Sequence[float], projection: str,
                 classes: Sequence[ClassSpec]) -> None:
        self.geotransform = tuple(geotransform)
        self.names = {c.value: c.name for c in classes}
        super().__init__(path, srs_of(projection), ogr.wkbPolygon,
                         [ogr.FieldDefn(name, kind) for name, kind in FIELDS])

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

    def keep_best(self, limit: int) -> int:
        """Keep only the ``limit`` most confident boxes written (ties: the first written), deleting the others in
        the file itself (SQLite sorts on disk: memory does not grow with the boxes); returns how many went."""
        if self.count <= limit:
            return 0
        name = self.layer.GetName()
        self.ds.ExecuteSQL(f'DELETE FROM "{name}" WHERE fid NOT IN (SELECT fid FROM "{name}" '
                           f'ORDER BY confidence DESC, fid LIMIT {int(limit)})')
        dropped, self.count = self.count - limit, limit
        return dropped


class LayerCopyWriter(StagedGeoPackage):
    """A copy of a vector layer (its fields, geometries and feature ids, in its own CRS) with three class fields
    appended: ``<prefix>class_value``, ``<prefix>class_name`` and ``<prefix>confidence`` (NULL for a feature not
    classified). Input fields of those names are replaced.

    Args:
        path: the final ``.gpkg``.
        source: the OGR layer copied.
        srs: the copy's CRS (the layer's own, or the one the caller knows it has).
        classes: the package's class table (names by value).
        prefix: put before the three field names.
    """

    def __init__(self, path: str | os.PathLike[str], source: ogr.Layer, srs: osr.SpatialReference | None,
                 classes: Sequence[ClassSpec], prefix: str = "") -> None:
        self.names = {c.value: c.name for c in classes}
        self.fields = tuple(f"{prefix}{name}" for name, _ in FIELDS)
        defn = source.GetLayerDefn()
        kept = [defn.GetFieldDefn(i) for i in range(defn.GetFieldCount())]
        self.replaced = [f.GetName() for f in kept if f.GetName().lower() in {n.lower() for n in self.fields}]
        kept = [f for f in kept if f.GetName() not in self.replaced]
        taken = {f.GetName().lower() for f in kept}
        fid = next(name for name in ("fid", "gpkg_fid", "ogc_fid", "fid_copy") if name not in taken)
        super().__init__(path, srs, source.GetGeomType(),
                         [*kept, *(ogr.FieldDefn(n, kind) for n, (_, kind) in zip(self.fields, FIELDS, strict=True))],
                         options=[f"FID={fid}"])

    def write(self, rows: Sequence[tuple[ogr.Feature, int | None, float | None]]) -> None:
        """Append features with their class value and confidence (None: not classified), in one transaction."""
        value_field, name_field, confidence_field = self.fields
        self.layer.StartTransaction()
        for feature, value, confidence in rows:
            out = ogr.Feature(self.defn)
            out.SetFrom(feature)  # geometry and the fields of the same name
            out.SetFID(feature.GetFID())
            if value is None:
                for name in self.fields:
                    out.SetFieldNull(name)
            else:
                out.SetField(value_field, int(value))
                out.SetField(name_field, self.names.get(int(value), str(int(value))))
                out.SetField(confidence_field, float(confidence))
            self.layer.CreateFeature(out)
        self.layer.CommitTransaction()
        self.count += len(rows)
