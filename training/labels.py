"""Labels as class values on the raster's pixel grid, one chip window at a time.

- :class:`PolygonLabels`: polygons (WKB in the raster's CRS) with a class attribute of numbers or names, kept in an
  in-memory OGR layer (invalid geometries repaired, or skipped and counted) and burnt with ``gdal.RasterizeLayer``
  into a chip-sized in-memory raster per window (later features win where polygons overlap).
- :class:`ClassRasterLabels`: a class raster warped on the fly (nearest neighbour, a GDAL VRT) onto the raster's grid.

Label chips hold class values (uint8, 0–254); :data:`IGNORE` (255) marks pixels outside every label.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from osgeo import gdal, ogr

from ..tiling.burn import PolygonBurner
from ..tiling.grid_match import warped_onto
from ..tiling.source import RasterSource
from ..tiling.window import Window, window_geotransform
from .errors import TrainingDataError

IGNORE = 255
BACKGROUND = 0
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#9edae5")


def colour(index: int) -> str:
    """A distinct, readable colour for the ``index``-th class (a fixed palette, then golden-angle hues)."""
    if index < len(PALETTE):
        return PALETTE[index]
    r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.65, 0.85)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def normalise_value(raw: object) -> int | str | None:
    """A label attribute as a class number (int) or a class name (str); None for NULL or blank."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, bool):
        raise TrainingDataError(f"Label value {raw!r} is neither a class number nor a class name.")
    if isinstance(raw, (int, np.integer)):
        return int(raw)
    if isinstance(raw, (float, np.floating)):
        if raw != raw:
            return None
        if not float(raw).is_integer():
            raise TrainingDataError(f"Label value {raw} is not a whole number: class numbers are 0–254.")
        return int(raw)
    text = str(raw).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() else text


def class_table(values: Sequence[int | str], given: Sequence[dict] | None, background: bool) -> list[dict]:
    """The class table: ``given`` (value, name, colour) checked against the labels, or derived from them (names
    sorted → 0, 1, …; numbers keep their value). With ``background`` a class 0 must exist or is added."""
    numbers = sorted({v for v in values if isinstance(v, int)})
    names = sorted({v for v in values if isinstance(v, str)}, key=str.casefold)
    if numbers and names:
        raise TrainingDataError(f"The label field mixes class numbers and class names (e.g. {numbers[0]} and "
                                f"{names[0]!r}). Use one kind: all numbers or all names.")
    if given:
        classes = [dict(c) for c in given]
        known_names = {c["name"].casefold() for c in classes}
        missing = [n for n in names if n.casefold() not in known_names] + \
                  [str(n) for n in numbers if n not in {c["value"] for c in classes}]
        if missing:
            raise TrainingDataError(f"Label value(s) {', '.join(missing[:5])} are not in the class table. Add them to "
                                    "the table, or leave the class table empty to derive it from the labels.")
    elif names:
        start = 1 if background else 0
        classes = [{"value": start + i, "name": n, "color": colour(i)} for i, n in enumerate(names)]
    else:
        classes = [{"value": v, "name": f"class {v}", "color": colour(i)} for i, v in enumerate(numbers)]
    bad = [c["value"] for c in classes if not 0 <= c["value"] <= 254]
    if bad:
        raise TrainingDataError(f"Class value(s) {bad} are outside 0–254 (255 marks unlabelled pixels).")
    if background and BACKGROUND not in {c["value"] for c in classes}:
        classes.insert(0, {"value": BACKGROUND, "name": "background", "color": "#000000"})
    return sorted(classes, key=lambda c: c["value"])


def value_of(label: int | str, classes: Sequence[dict]) -> int:
    """The class value a normalised label stands for (a number is itself; a name is looked up, case-insensitive)."""
    if isinstance(label, int):
        return label
    return next(c["value"] for c in classes if c["name"].casefold() == label.casefold())


@dataclass
class RepairCounts:
    """What happened to the label geometries: repaired, skipped (invalid beyond repair, empty, unlabelled)."""

    repaired: int = 0
    skipped_invalid: int = 0
    skipped_unlabelled: int = 0


def repaired(geom: ogr.Geometry) -> ogr.Geometry | None:
    """``geom`` made valid (MakeValid, else buffer(0)), keeping only its polygon parts; None when nothing is left."""
    fixed = geom.MakeValid() if hasattr(geom, "MakeValid") else None
    if fixed is None or not fixed.IsValid():
        fixed = geom.Buffer(0)
    if fixed is None or fixed.IsEmpty():
        return None
    if ogr.GT_Flatten(fixed.GetGeometryType()) == ogr.wkbGeometryCollection:
        parts = ogr.Geometry(ogr.wkbMultiPolygon)
        for i in range(fixed.GetGeometryCount()):
            part = fixed.GetGeometryRef(i)
            flat = ogr.GT_Flatten(part.GetGeometryType())
            for poly in ([part] if flat == ogr.wkbPolygon else
                         [part.GetGeometryRef(j) for j in range(part.GetGeometryCount())]
                         if flat == ogr.wkbMultiPolygon else []):
                parts.AddGeometry(poly)
        fixed = parts
    return None if fixed.IsEmpty() or not fixed.IsValid() else fixed


class PolygonLabels:
    """Polygons with class values, burnt chip by chip (see the module docstring)."""

    def __init__(self, features: Sequence[tuple[bytes, object]], source: RasterSource,
                 given: Sequence[dict] | None, background: bool, region: Window) -> None:
        """``features``: (WKB in the raster's CRS, raw class attribute); ``region``: the pixels chips come from."""
        self.counts = RepairCounts()
        geoms: list[tuple[ogr.Geometry, int | str]] = []
        for wkb, raw in features:
            label = normalise_value(raw)
            geom = ogr.CreateGeometryFromWkb(bytes(wkb)) if wkb else None
            if label is None or geom is None or geom.IsEmpty():
                self.counts.skipped_unlabelled += 1
                continue
            if not geom.IsValid():
                geom = repaired(geom)
                if geom is None:
                    self.counts.skipped_invalid += 1
                    continue
                self.counts.repaired += 1
            geoms.append((geom, label))
        self.classes = class_table([label for _, label in geoms], given, background)
        self.fill = BACKGROUND if background else IGNORE
        self._burner = PolygonBurner(((geom, value_of(label, self.classes)) for geom, label in geoms),
                                     source.projection)
        gt = source.geotransform
        xs = (gt[0] + region.col_off * gt[1], gt[0] + region.col_end * gt[1])
        ys = (gt[3] + region.row_off * gt[5], gt[3] + region.row_end * gt[5])
        bounds = ogr.CreateGeometryFromWkt(
            f"POLYGON(({min(xs)} {min(ys)},{max(xs)} {min(ys)},{max(xs)} {max(ys)},{min(xs)} {max(ys)},"
            f"{min(xs)} {min(ys)}))")
        self.inside = sum(bool(geom.Intersects(bounds)) for geom, _ in geoms)
        if not self.inside:
            raise TrainingDataError(
                f"None of the {len(geoms)} label polygon(s) lies inside the raster{' extent' if geoms else ''}. "
                "Check that the labels cover the raster (and that their CRS is set right), or choose another extent.")
        self._geotransform = gt

    def read(self, window: Window) -> np.ndarray:
        """Class values of ``window`` (uint8, unlabelled pixels :data:`IGNORE`, or 0 with background)."""
        return self._burner.burn(window_geotransform(self._geotransform, window), window.width, window.height,
                                 self.fill, gdal.GDT_Byte)


class ClassRasterLabels:
    """A class raster (whole numbers 0–254; nodata and 255 = unlabelled) on the raster's grid (see the module)."""

    def __init__(self, path: str, source: RasterSource, given: Sequence[dict] | None, background: bool) -> None:
        try:
            src = gdal.Open(str(path))
        except RuntimeError as exc:
            raise TrainingDataError(f"Cannot open the class raster {path} ({exc}).") from exc
        self._ds = warped_onto(src, source, "near", gdal.GDT_Byte, IGNORE)
        band = self._ds.GetRasterBand(1)
        histogram = band.GetHistogram(-0.5, 255.5, 256, include_out_of_range=0, approx_ok=0)
        present = [v for v in range(255) if histogram[v] > 0]
        if not present:
            raise TrainingDataError(f"The class raster {path} has no labelled pixel inside the raster. Check that it "
                                    "covers the raster (and its CRS).")
        self.classes = class_table(present, given, background)
        self.fill = BACKGROUND if background else IGNORE
        self.inside = int(sum(histogram[v] for v in present))

    def read(self, window: Window) -> np.ndarray:
        """Class values of ``window`` (uint8; unlabelled :data:`IGNORE`, or 0 with background)."""
        data = self._ds.GetRasterBand(1).ReadAsArray(window.col_off, window.row_off, window.width, window.height)
        data = data.astype(np.uint8)
        if self.fill != IGNORE:
            data[data == IGNORE] = self.fill
        return data


class ChipMask:
    """Mask polygons (in the raster's CRS): a chip is cut only where every pixel centre lies inside them, as
    ArcGIS's *input mask polygons* do. The polygons are burnt chip by chip like label polygons."""

    def __init__(self, polygons: Sequence[bytes], source: RasterSource, region: Window) -> None:
        try:
            self._burnt = PolygonLabels([(wkb, 1) for wkb in polygons], source,
                                        [{"value": 1, "name": "mask", "color": "#000000"}], False, region)
        except TrainingDataError as exc:
            raise TrainingDataError(f"No mask polygon lies inside the raster (or the extent): {len(polygons)} "
                                    "given. Check the mask layer (and its CRS), or leave the mask out.") from exc
        self.counts = self._burnt.counts

    def covers(self, window: Window) -> bool:
        """True when every pixel centre of ``window`` lies inside the mask polygons."""
        return bool((self._burnt.read(window) == 1).all())
