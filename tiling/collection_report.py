"""What a collection run leaves besides its outputs (no QGIS here): a VRT mosaic of the outputs when they fit
together, and a summary table (CSV and JSON: input, status, seconds, output, message), both published with the
run (:mod:`tiling.transaction`)."""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from osgeo import gdal, osr

from .collection import CollectionItem
from .errors import DeepRasterError, OutputError
from .source import RasterSource
from .transaction import Move, stage, write_together

SUMMARY_COLUMNS = ("input", "status", "seconds", "output", "message")


def _crs_name(projection: str) -> str:
    srs = osr.SpatialReference()
    if not projection or srs.ImportFromWkt(projection) != 0:
        return "no CRS"
    srs.AutoIdentifyEPSG()
    code = srs.GetAuthorityCode(None)
    return f"EPSG:{code}" if code else (srs.GetName() or "a custom CRS")


def _same_crs(a: str, b: str) -> bool:
    if a == b:
        return True
    sa, sb = osr.SpatialReference(), osr.SpatialReference()
    if not a or not b or sa.ImportFromWkt(a) != 0 or sb.ImportFromWkt(b) != 0:
        return False
    return bool(sa.IsSame(sb))


def mosaic_problem(paths: Sequence[str]) -> str | None:
    """Why the rasters at ``paths`` cannot be put in one VRT mosaic (None: they can): none, unreadable, without
    georeferencing or rotated, in different CRS, or with different band layouts (count and data types)."""
    if not paths:
        return "No output was written, so there is no mosaic."
    try:
        sources = [RasterSource.open(p) for p in paths]
    except DeepRasterError as exc:
        return f"No mosaic: an output cannot be read ({exc})."
    first = sources[0]
    for source in sources:
        name = Path(source.path).name
        if not source.georeferenced or source.gcps:
            return f"No mosaic: {name} has no geotransform (only georeferenced outputs can be mosaicked)."
        if source.geotransform[2] or source.geotransform[4]:
            return f"No mosaic: {name} is rotated (its geotransform has rotation terms); a VRT mosaic cannot hold it."
        if not _same_crs(source.projection, first.projection):
            return (f"No mosaic: the outputs are in different CRS ({_crs_name(first.projection)} for "
                    f"{Path(first.path).name}, {_crs_name(source.projection)} for {name}). Reproject them to one "
                    "CRS (Warp) to mosaic them.")
        if source.band_count != first.band_count or source.dtypes != first.dtypes:
            return (f"No mosaic: the outputs have different band layouts ({first.band_count} × "
                    f"{'/'.join(sorted(set(first.dtypes)))} in {Path(first.path).name}, {source.band_count} × "
                    f"{'/'.join(sorted(set(source.dtypes)))} in {name}).")
    return None


def build_mosaic(paths: Sequence[str], target: str | os.PathLike[str]) -> tuple[Path | None, str]:
    """A VRT mosaic of ``paths`` at ``target`` (sources relative to it; the finest pixel size where they differ),
    published with the run; or None and the reason when they do not fit together (see :func:`mosaic_problem`),
    and an earlier run's mosaic at ``target`` is removed with the run (it would show other outputs)."""
    target = Path(target)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    problem = mosaic_problem(paths)
    if problem:
        if target.exists():
            stage([Move(temp, target)])  # no temporary file: the older target goes
            problem += f" The mosaic of an earlier run ({target.name}) was removed."
        return None, problem
    sizes = {tuple(abs(v) for v in RasterSource.open(p).geotransform[1:6:4]) for p in paths}
    try:
        ds = gdal.BuildVRT(str(temp), list(paths), options=gdal.BuildVRTOptions(resolution="highest"))
        if ds is None:
            raise OutputError(f"GDAL could not build the mosaic {target}.")
        _describe_like(ds, paths[0])
        ds.FlushCache()
        ds = None
    except RuntimeError as exc:
        temp.unlink(missing_ok=True)
        raise OutputError(f"Cannot write the mosaic {target}: {exc}. Check the output folder.") from exc
    stage([Move(temp, target)])
    note = f"Mosaic of {len(paths)} output{'s' * (len(paths) != 1)}: {target.name}."
    if len(sizes) > 1:
        note += " The outputs have different pixel sizes; the mosaic has the finest."
    return target, note


def _describe_like(mosaic: gdal.Dataset, path: str) -> None:
    """Band names ("class", "feature 1" …) and dataset metadata (the encoder of a feature raster) of the first
    output on the mosaic (GDAL's VRT builder keeps only pixels, nodata and colours)."""
    first = gdal.Open(path)
    for i in range(1, min(mosaic.RasterCount, first.RasterCount) + 1):
        if first.GetRasterBand(i).GetDescription():
            mosaic.GetRasterBand(i).SetDescription(first.GetRasterBand(i).GetDescription())
    if first.GetMetadata():
        mosaic.SetMetadata(first.GetMetadata())


def summary_rows(items: Sequence[CollectionItem]) -> list[dict[str, Any]]:
    """One row per input: input, status, seconds, output (the main output when it was written), message."""
    return [{"input": item.input, "status": item.status, "seconds": item.seconds,
             "output": item.main if item.status == "ok" else "", "message": item.message} for item in items]


def counts(items: Sequence[CollectionItem]) -> dict[str, int]:
    """Inputs per status."""
    out = {"inputs": len(items), "ok": 0, "failed": 0, "cancelled": 0}
    for item in items:
        out[item.status] = out.get(item.status, 0) + 1
    return out


def write_summary(items: Sequence[CollectionItem], csv_path: str | os.PathLike[str],
                  json_path: str | os.PathLike[str], details: dict[str, Any] | None = None) -> list[Path]:
    """The summary table as CSV and as JSON (with ``details``: algorithm, parameters, mosaic ...), written together
    with the run's other outputs."""
    rows = summary_rows(items)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    document = {**(details or {}), "counts": counts(items), "items": [
        {**row, "outputs": item.outputs if item.status == "ok" else {}, "band_count": item.band_count}
        for row, item in zip(rows, items, strict=True)]}
    return write_together({csv_path: text.getvalue(),
                           json_path: json.dumps(document, indent=2, default=str) + "\n"})
