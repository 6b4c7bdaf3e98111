"""Export training data: image and label chips of a raster, split by spatial blocks, into a new folder.

The run streams chip by chip (one chip's bands read with GDAL, its labels burnt or read for its window, both written
as tiled DEFLATE GeoTIFFs), so memory does not grow with the raster. Everything goes into a hidden folder beside the
output, which becomes the output only when the whole run succeeded (:func:`tiling.transaction.stage`): a failed or
cancelled run leaves nothing.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from osgeo import gdal

from ..tiling.callbacks import Callbacks, check_cancel
from ..tiling.errors import OutputError, RasterInputError
from ..tiling.source import RasterSource, pixel_validity, read_failure
from ..tiling.transaction import Move, stage
from ..tiling.window import Window
from .errors import TrainingDataError
from .labels import IGNORE, ChipMask, ClassRasterLabels, PolygonLabels
from .layout import MANIFEST, ChipStatistics, write_layout
from .split import TRAIN, VALIDATION, SplitPlan, chip_windows, split_by_blocks

CHIP_OPTIONS = ("TILED=YES", "COMPRESS=DEFLATE", "TFW=YES")


@dataclass(frozen=True)
class ExportRequest:
    """What to export.

    Attributes:
        raster: the image raster (any GDAL raster, north-up).
        output: the folder to create (it may exist empty; a non-empty one only with ``overwrite``).
        polygons: (WKB in the raster's CRS, class attribute) per label polygon; or
        label_raster: a class raster (whole numbers 0–254) instead.
        classes: the class table (value, name, colour); None: derived from the labels.
        bands: 1-based band numbers (empty: all).
        chip_size: chip width and height, px; stride: chip spacing, px (None: the chip size).
        min_labelled: the least fraction (0–1) of a chip's pixels that must be labelled for it to be kept.
        background: pixels outside every label become class 0 (background) instead of the ignore value 255.
        region: the pixels chips come from (None: the whole raster).
        block_size: side of the split blocks, map units (None: 10 chips).
        validation_fraction: the share of blocks that go to validation; seed: the draw's seed.
    """

    raster: str
    output: str
    polygons: Sequence[tuple[bytes, object]] | None = None
    label_raster: str | None = None
    classes: Sequence[dict] | None = None
    bands: tuple[int, ...] = ()
    chip_size: int = 256
    stride: int | None = None
    min_labelled: float = 0.05
    background: bool = False
    region: Window | None = None
    block_size: float | None = None
    validation_fraction: float = 0.2
    seed: int = 0
    overwrite: bool = False
    label_field: str = ""
    mask: Sequence[bytes] | None = None
    """Mask polygons (WKB in the raster's CRS): only chips lying wholly inside them are cut (None: no mask)."""
    inputs: tuple[str, ...] = ()
    """Other files the run reads (the label layer's file): the output folder must not hold them."""


@dataclass
class ExportResult:
    """The written folder and what it holds."""

    folder: Path
    chips: dict[str, int] = field(default_factory=dict)
    """Chips per split."""
    pixel_counts: dict[str, dict[int, int]] = field(default_factory=dict)
    """Split → class value → labelled pixels."""
    skipped: dict[str, int] = field(default_factory=dict)


def check_output(folder: Path, overwrite: bool, inputs: Sequence[str] = ()) -> None:
    """Refuse an output that is a file, a folder holding one of the ``inputs``, or a non-empty folder unless
    ``overwrite``."""
    real = os.path.realpath(folder)
    for item in inputs:
        if item and os.path.realpath(item).startswith(real + os.sep):
            raise OutputError(f"The output folder {folder} holds the input {item}: replacing the folder would destroy "
                              "it. Choose another output folder.")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"The output folder {folder} is a file. Choose a folder.")
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise OutputError(f"The output folder {folder} is not empty. Choose an empty or new folder, or tick "
                              "'Overwrite a non-empty output folder' to replace an earlier export.")
        if not any((folder / name).is_file() for name in (MANIFEST, "map.txt")):
            raise OutputError(f"The output folder {folder} holds files that are not a training data export (no "
                              f"{MANIFEST} or map.txt): overwriting would delete them. Choose an empty or new "
                              "folder.")


def check_disk_space(output: Path, estimate: int) -> None:
    """Refuse when the output's disk has less free space than ``estimate`` bytes (the chips uncompressed)."""
    free = shutil.disk_usage(output.parent if not output.exists() else output).free
    if free < estimate:
        raise OutputError(f"Not enough disk space for the chips: about {estimate / 2**20:.0f} MiB may be needed "
                          f"(uncompressed), {free / 2**20:.0f} MiB are free on the disk of {output}. Free space, "
                          "choose another disk, or export fewer chips (a larger stride or a smaller extent).")


def open_north_up(raster: str, bands: Sequence[int]) -> tuple[RasterSource, tuple[int, ...]]:
    """The raster and its bands to export (all when ``bands`` is empty); refused unless georeferenced north-up."""
    source = RasterSource.open(raster)
    chosen = tuple(bands) or tuple(range(1, source.band_count + 1))
    source.check_bands(chosen)
    gt = source.geotransform
    if not source.georeferenced or source.gcps or gt[2] or gt[4]:
        raise RasterInputError(f"{source.path} is not georeferenced north-up: chips could not be placed on the map. "
                               "Warp it first (Raster > Projections > Warp).")
    return source, chosen


def check_chip_size(chip: int, stride: int) -> None:
    """Refuse chips under 16 px or a stride under 1 px."""
    if chip < 16 or stride < 1:
        raise TrainingDataError(f"Chip size {chip} px is too small: use at least 16 px (e.g. 256).")


def split_plan(request, source: RasterSource, windows: list[Window], region: Window, chip: int,
               gap: int | None = None) -> tuple[SplitPlan, float]:
    """The chip ``windows`` split by blocks of ``request.block_size`` map units (None: 10 chips of ``chip`` px), and
    that size; ``gap``: see :func:`training.split.split_by_blocks`."""
    gt = source.geotransform
    block = request.block_size or 10 * chip * abs(gt[1])
    return split_by_blocks(windows, region, (gt[1], gt[5]), block, request.validation_fraction, request.seed,
                           gap), block


T = TypeVar("T")


def publish_folder(output: Path, write: Callable[[Path], T], callbacks: Callbacks) -> T:
    """``write(temp)`` fills a hidden folder beside ``output`` (made with empty ``images/`` and ``labels/``; removed
    if it fails), which the run's transaction then makes the output; returns what ``write`` returned."""
    temp = output.parent / f".{output.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        (temp / "images").mkdir(parents=True)
        (temp / "labels").mkdir()
        written = write(temp)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    stage([Move(temp, output)])
    callbacks.progress(1.0)
    return written


def chips_per_split(records: list[dict]) -> dict[str, int]:
    """Chips per split (training, validation)."""
    return {s: sum(r["split"] == s for r in records) for s in (TRAIN, VALIDATION)}


def window_entry(window: Window) -> list[int]:
    """A chip record's ``window``: column, row, width, height (source pixels)."""
    return [window.col_off, window.row_off, window.width, window.height]


def split_text(records: list[dict]) -> str:
    """``N training, M validation`` chips of ``records``."""
    counts = chips_per_split(records)
    return f"{counts[TRAIN]} training, {counts[VALIDATION]} validation"


def export_training_data(request: ExportRequest, callbacks: Callbacks | None = None) -> ExportResult:
    """Write the chips, ``manifest.json`` and Esri's Classified_Tiles files (see the module docstring)."""
    gdal.UseExceptions()
    callbacks = callbacks or Callbacks()
    output = Path(request.output)
    check_output(output, request.overwrite, (request.raster, request.label_raster or "", *request.inputs))
    source, bands = open_north_up(request.raster, request.bands)
    chip, stride = request.chip_size, request.stride or request.chip_size
    check_chip_size(chip, stride)
    if not 0.0 <= request.min_labelled <= 1.0:
        raise TrainingDataError(f"The minimum labelled fraction must be 0–1 (got {request.min_labelled}).")
    region = request.region or source.window
    windows = chip_windows(region, chip, stride)
    if request.mask is not None:
        mask = ChipMask(request.mask, source, region)
        inside = [w for w in windows if mask.covers(w)]
        callbacks.info(f"Mask: {len(inside)} of {len(windows)} chip position(s) lie wholly inside the mask polygons.")
        if not inside:
            raise TrainingDataError(f"No {chip} px chip lies wholly inside the mask polygons. Use larger mask "
                                    "polygons, a smaller chip size, or no mask.")
        windows = inside
    plan, block = split_plan(request, source, windows, region, chip)
    check_disk_space(output, len(plan.chips) * chip * chip *
                     (1 + sum(gdal.GetDataTypeSize(gdal.GetDataTypeByName(source.dtypes[b - 1])) // 8 for b in bands)))
    callbacks.stage("Reading the labels")
    if request.label_raster:
        labels: PolygonLabels | ClassRasterLabels = ClassRasterLabels(request.label_raster, source, request.classes,
                                                                       request.background)
    elif request.polygons is not None:
        labels = PolygonLabels(request.polygons, source, request.classes, request.background, region)
        counts = labels.counts
        if counts.repaired or counts.skipped_invalid or counts.skipped_unlabelled:
            callbacks.warning(f"Label polygons: {counts.repaired} invalid geometr(y/ies) repaired, "
                              f"{counts.skipped_invalid} skipped (invalid beyond repair), "
                              f"{counts.skipped_unlabelled} skipped (no class value or no geometry).")
    else:
        raise TrainingDataError("Give labels: a polygon layer with a class field, or a class raster.")

    def write(temp: Path) -> _Written:
        written = _write_chips(request, source, bands, plan, labels, temp, callbacks)
        write_layout(temp, request, source, bands, labels.classes, written.records, written.stats, plan,
                     (chip, stride, block))
        return written

    result = publish_folder(output, write, callbacks)
    return ExportResult(output, chips_per_split(result.records), result.stats.pixel_counts, result.skipped)


@dataclass
class _Written:
    records: list[dict]
    stats: ChipStatistics
    skipped: dict[str, int]


def _write_chips(request: ExportRequest, source: RasterSource, bands: tuple[int, ...], plan, labels,
                 folder: Path, callbacks: Callbacks) -> _Written:
    """Every kept chip written; per-class pixel counts per split and band statistics of the training chips."""
    ds = gdal.Open(source.path)
    dtype = chip_dtype(source, bands)
    stats = ChipStatistics(len(bands), [c["value"] for c in labels.classes])
    records: list[dict] = []
    skipped = {"too_few_labelled": 0, "no_valid_pixel": 0, "gap": plan.dropped_by_gap}
    callbacks.stage("Writing chips")
    for i, (window, split) in enumerate(plan.chips):
        check_cancel(callbacks)
        by_band, valid = read_chip(ds, source, bands, window)
        label = labels.read(window)
        label[~valid] = IGNORE
        if not valid.any():
            skipped["no_valid_pixel"] += 1
            continue
        if np.count_nonzero(label != IGNORE) < request.min_labelled * label.size or not (label != IGNORE).any():
            skipped["too_few_labelled"] += 1
            continue
        name = f"{len(records):09d}.tif"
        write_image_chip(folder / "images" / name, source, bands, by_band, window, dtype)
        _write_label(folder / "labels" / name, source, window, label, labels.classes)
        stats.add(split, [by_band[b] for b in bands], valid, label)
        records.append({"image": f"images/{name}", "label": f"labels/{name}", "split": split,
                        "window": window_entry(window)})
        callbacks.progress(0.95 * (i + 1) / len(plan.chips))
    _check_counts(records, stats, labels.classes, skipped)
    callbacks.info(f"{len(records)} chips written: {split_text(records)}; skipped: "
                   f"{skipped['too_few_labelled']} with too few labelled pixels, {skipped['no_valid_pixel']} without "
                   f"a valid pixel, {skipped['gap']} in the one-chip gap between the splits.")
    return _Written(records, stats, skipped)


def chip_dtype(source: RasterSource, bands: tuple[int, ...]) -> int:
    """The GDAL data type of image chips: the bands' own when they share one, else float32."""
    dtypes = {source.dtypes[b - 1] for b in bands}
    return gdal.GetDataTypeByName(dtypes.pop()) if len(dtypes) == 1 else gdal.GDT_Float32


def read_chip(ds: gdal.Dataset, source: RasterSource, bands: tuple[int, ...], window: Window
              ) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """The bands of one chip window (band number → array) and its pixel validity
    (:func:`tiling.source.pixel_validity`)."""
    try:
        by_band = {b: ds.GetRasterBand(b).ReadAsArray(window.col_off, window.row_off, window.width, window.height)
                   for b in bands}
    except RuntimeError as exc:
        raise read_failure(source.path, exc) from exc
    return by_band, pixel_validity(source, ds, window, by_band)


def _check_counts(records: list[dict], stats: ChipStatistics, classes: Sequence[dict], skipped: dict) -> None:
    for split, what in ((TRAIN, "training"), (VALIDATION, "validation")):
        if not any(r["split"] == split for r in records):
            raise TrainingDataError(
                f"No {what} chip is left (chips kept: {len(records)}; {skipped['too_few_labelled']} had too few "
                f"labelled pixels, {skipped['gap']} fell in the gap between the splits). Choose a smaller chip size "
                "or block size, a lower minimum labelled fraction, or another seed.")
        for c in classes:
            if not stats.pixel_counts[split].get(c["value"]):
                raise TrainingDataError(
                    f"Class {c['value']} ({c['name']}) has no pixel in the {what} chips. Choose another seed or a "
                    "smaller block size so both splits hold every class, or leave the class out of the labels.")


def _create(path: Path, source: RasterSource, window: Window, count: int, dtype: int,
            geotransform: Sequence[float] | None = None) -> gdal.Dataset:
    block = min(256, -(-window.width // 16) * 16)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), window.width, window.height, count, dtype,
                                              [*CHIP_OPTIONS, f"BLOCKXSIZE={block}", f"BLOCKYSIZE={block}"])
    ds.SetGeoTransform(geotransform or source.window_geotransform(window))
    if source.projection:
        ds.SetProjection(source.projection)
    return ds


def write_image_chip(path: Path, source: RasterSource, bands: tuple[int, ...], by_band: dict, window: Window,
                     dtype: int, geotransform: Sequence[float] | None = None, nodata: float | None = None) -> None:
    """One image chip: ``by_band`` (band number → array of ``window``) as a tiled GeoTIFF on the raster's grid (or
    on ``geotransform``, a resampled chip's), with the bands' nodata value (or ``nodata``)."""
    ds = _create(path, source, window, len(bands), dtype, geotransform)
    for i, b in enumerate(bands, 1):
        out = ds.GetRasterBand(i)
        out.WriteArray(by_band[b])
        out.SetDescription(source.descriptions[b - 1] or f"band {b}")
        value = source.nodata[b - 1] if nodata is None else nodata
        if value is not None:
            out.SetNoDataValue(value)
    ds.FlushCache()
    ds = None


def _write_label(path: Path, source: RasterSource, window: Window, label: np.ndarray, classes: Sequence[dict]
                 ) -> None:
    ds = _create(path, source, window, 1, gdal.GDT_Byte)
    band = ds.GetRasterBand(1)
    band.WriteArray(label)
    band.SetNoDataValue(IGNORE)
    table = gdal.ColorTable()
    for c in classes:
        rgb = tuple(int(c["color"][k:k + 2], 16) for k in (1, 3, 5))
        table.SetColorEntry(c["value"], (*rgb, 255))
    band.SetRasterColorTable(table)
    ds.FlushCache()
    ds = None


def folder_size(folder: Path) -> int:
    """Bytes of the files under ``folder``."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)
