"""Evaluate a class raster against reference labels: a confusion matrix accumulated block by block, and every metric
of :mod:`analysis.metrics`.

The reference is a class raster (read directly when it shares the class raster's grid, otherwise resampled by
nearest neighbour onto that grid through a GDAL warped VRT, read lazily) or polygons with a class value each
(rasterised window by window, pixel centres inside, a later polygon over an earlier one). Polygons must already be
in the class raster's CRS (the Processing adapter reprojects them). Pixels that are nodata on either side are left
out. Memory depends on the block size, never on the raster size. Needs numpy and GDAL/OGR only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from osgeo import gdal, ogr

from ..tiling.burn import PolygonBurner
from ..tiling.callbacks import Callbacks, check_cancel
from ..tiling.errors import RasterInputError
from ..tiling.grid_match import bounds as _bounds
from ..tiling.grid_match import footprint_in, same_grid, warped_onto
from ..tiling.grid_match import overlaps as _overlaps
from ..tiling.source import RasterSource, pixel_validity, read_failure
from ..tiling.window import Window, window_geotransform
from .errors import EvaluationError
from .evaluation_report import EvaluationReport
from .metrics import ConfusionMatrix

gdal.UseExceptions()
ogr.UseExceptions()

NO_LABEL = -(2**31)
"""Int32 value of a pixel without reference label (no polygon, reference nodata, outside the reference raster)."""
BLOCK = 1024
"""Side of the square blocks read at a time, in pixels."""


@dataclass(frozen=True)
class RasterReference:
    """A reference class raster (band 1; its nodata, if any, is left out)."""

    path: str


@dataclass(frozen=True)
class PolygonReference:
    """Reference polygons in the class raster's CRS: ``features`` are (WKB, class value); ``source`` and
    ``field`` only describe them in the report."""

    features: Sequence[tuple[bytes, int]]
    source: str = ""
    field: str = ""
    warnings: tuple[str, ...] = ()


def class_table(path: str) -> dict[int, dict[str, str | None]]:
    """Class value → {"name", "colour" (#rrggbb)} from band 1's category names and colour table (either may be
    missing; values without a name and without a colour are left out)."""
    ds = gdal.Open(str(path))
    band = ds.GetRasterBand(1)
    colours = band.GetColorTable()  # first: GDAL 3.6's GTiff reads category names from the .aux.xml only once
    names = band.GetCategoryNames() or []  # something else has loaded it
    table: dict[int, dict[str, str | None]] = {}
    for value, name in enumerate(names):
        if name and name.strip():
            table[value] = {"name": name.strip(), "colour": None}
    if colours is not None:
        for value in range(colours.GetCount()):
            r, g, b, *_ = colours.GetColorEntry(value)
            if value in table:
                table[value]["colour"] = f"#{r:02x}{g:02x}{b:02x}"
    return table


def label_values(labels: Sequence[Any], table: dict[int, dict[str, str | None]]
                 ) -> tuple[list[int | None], list[str]]:
    """Class values of reference labels: numbers as they are; names matched (case-insensitive) with the class
    raster's class names. Returns one value per label (None: no class) and warnings.

    Raises :class:`EvaluationError` when names cannot be matched at all or a number is not an integer.
    """
    by_name = {str(info["name"]).casefold(): value for value, info in table.items() if info["name"]}
    values: list[int | None] = []
    unmatched: dict[str, int] = {}
    for label in labels:
        if isinstance(label, bool):
            label = int(label)
        if isinstance(label, (int, np.integer)):
            values.append(int(label))
            continue
        if isinstance(label, (float, np.floating)):
            if not float(label).is_integer():
                raise EvaluationError(f"The class field holds {label}, not a whole number: class values are integers. "
                                      "Choose a field of class values or class names.")
            values.append(int(label))
            continue
        text = str(label).strip()
        if text.casefold() in by_name:
            values.append(by_name[text.casefold()])
        elif text.lstrip("-").isdigit():
            values.append(int(text))
        else:
            values.append(None)
            unmatched[text] = unmatched.get(text, 0) + 1
    if unmatched and not any(v is not None for v in values):
        names = ", ".join(sorted(unmatched))
        if not by_name:
            raise EvaluationError(f"The class field holds names ({names}), but the class raster has no class names "
                                  "to match them with. Choose a field of class values, or a class raster with "
                                  "category names (as Classify pixels writes).")
        raise EvaluationError(f"No name of the class field ({names}) matches a class of the class raster "
                              f"({', '.join(str(i['name']) for i in table.values())}). Choose the field that holds "
                              "these class names, or a field of class values.")
    warnings = []
    if unmatched:
        listed = ", ".join(f"{name} ({n})" for name, n in sorted(unmatched.items()))
        warnings.append(f"Reference names that match no class of the class raster were skipped: {listed}.")
    return values, warnings


def _reference_dataset(path: str, target: RasterSource) -> tuple[gdal.Dataset, float | None, bool]:
    """The reference raster on the class raster's grid (itself, or a nearest-neighbour warped VRT), the nodata
    value to leave out, and whether it was resampled."""
    try:
        ref = gdal.Open(str(path))
    except RuntimeError as exc:
        raise RasterInputError(f"Cannot open the reference raster {path} ({exc}). Choose a class raster.") from exc
    nodata = ref.GetRasterBand(1).GetNoDataValue()
    if same_grid(ref, target):
        return ref, nodata, False
    if not _overlaps(footprint_in(ref, target), _bounds(target.geotransform, target.width, target.height)):
        raise EvaluationError(f"The reference raster {path} does not overlap the class raster {target.path}. "
                              "Choose a reference over the same area.")
    return warped_onto(ref, target, "near", gdal.GDT_Int32, NO_LABEL), NO_LABEL, True


def _blocks(region: Window) -> Iterator[Window]:
    for row in range(region.row_off, region.row_end, BLOCK):
        for col in range(region.col_off, region.col_end, BLOCK):
            yield Window(col, row, min(BLOCK, region.col_end - col), min(BLOCK, region.row_end - row))


def evaluate_classes(class_raster: str, reference: RasterReference | PolygonReference, region: Window | None = None,
                     callbacks: Callbacks | None = None) -> EvaluationReport:
    """Confusion matrix and metrics of ``class_raster`` (band 1) against ``reference`` over ``region`` (a pixel
    window of the class raster; None: all of it), read block by block."""
    cb = callbacks or Callbacks()
    source = RasterSource.open(class_raster)
    region = source.window if region is None else region.intersection(source.window)
    table = class_table(class_raster)
    warnings = list(getattr(reference, "warnings", ()))
    rasteriser, ref_ds, ref_nodata = None, None, None
    if isinstance(reference, PolygonReference):
        rasteriser = PolygonBurner((ogr.CreateGeometryFromWkb(bytes(wkb)), value)
                                   for wkb, value in reference.features if wkb)
        if rasteriser.envelope is None or not _overlaps(rasteriser.envelope, _bounds(
                source.geotransform, source.width, source.height)):
            raise EvaluationError("No reference polygon overlaps the class raster. Choose reference polygons over "
                                  "the same area (layers in another CRS are reprojected).")
        described = {"kind": "polygons", "source": reference.source, "field": reference.field,
                     "polygons": len(reference.features)}
    else:
        ref_ds, ref_nodata, resampled = _reference_dataset(reference.path, source)
        described = {"kind": "raster", "source": reference.path,
                     "resampled": "nearest neighbour onto the class raster's grid" if resampled else "no (same grid)"}
    ds = gdal.Open(source.path)
    band = ds.GetRasterBand(1)
    matrix = ConfusionMatrix()
    counts = {"reference": 0, "reference_on_class_nodata": 0}
    blocks = list(_blocks(region))
    for i, w in enumerate(blocks):
        check_cancel(cb)
        try:
            predicted = band.ReadAsArray(w.col_off, w.row_off, w.width, w.height)
            if rasteriser is not None:
                ref = rasteriser.burn(window_geotransform(source.geotransform, w), w.width, w.height, NO_LABEL)
                ref_valid = ref != NO_LABEL
            else:
                ref = ref_ds.GetRasterBand(1).ReadAsArray(w.col_off, w.row_off, w.width, w.height)
                ref_valid = np.isfinite(ref) if ref.dtype.kind == "f" else np.ones(ref.shape, bool)
                if ref_nodata is not None and not np.isnan(ref_nodata):
                    ref_valid &= ref != ref_nodata
        except RuntimeError as exc:
            raise read_failure(source.path, exc) from exc
        valid = pixel_validity(source, ds, w, {1: predicted}) & ref_valid
        counts["reference"] += int(ref_valid.sum())
        counts["reference_on_class_nodata"] += int(ref_valid.sum() - valid.sum())
        ref_values = np.where(ref_valid, ref, 0).astype(np.int64)
        pred_values = np.where(valid, predicted, 0).astype(np.int64)
        matrix.update(ref_values, pred_values, valid)
        cb.progress((i + 1) / len(blocks))
    if counts["reference"] == 0:
        raise EvaluationError("No reference pixel lies inside the extent: the reference labels no pixel of the class "
                              "raster there. Choose an extent that holds reference labels, or leave it empty.")
    if matrix.total == 0:
        raise EvaluationError(f"All {counts['reference']} reference pixels inside the extent are nodata in the class "
                              "raster: nothing can be evaluated. Choose an extent where the class raster has classes.")
    if counts["reference_on_class_nodata"]:
        warnings.append(f"{counts['reference_on_class_nodata']} reference pixels are nodata in the class raster and "
                        "were left out.")
    names = [str(table.get(v, {}).get("name") or v) for v in matrix.classes.tolist()]
    classes = [{"value": v, "name": n, "colour": table.get(v, {}).get("colour")}
               for v, n in zip(matrix.classes.tolist(), names, strict=True)]
    bounds = _bounds(window_geotransform(source.geotransform, region), region.width, region.height)
    return EvaluationReport(
        class_raster=source.path, reference=described,
        extent={"window": [region.col_off, region.row_off, region.width, region.height], "bounds": list(bounds)},
        pixels={"evaluated": matrix.total, **counts}, classes=classes, metrics=matrix.scores(names),
        warnings=warnings)
