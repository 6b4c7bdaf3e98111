"""Export object classification training data: one chip per feature of a point or polygon layer, labelled with the
feature's class, split by spatial blocks, in Esri's *Labeled_Tiles* layout.

Each chip is exactly the one *Classify objects* reads for that feature (:mod:`objects.chips`: the feature's extent
made square plus a buffer in map units, or a fixed number of raster pixels centred on it; points without a buffer
take the chip size in raster pixels), resampled to the chip size by area over the valid pixels, and written in raw
raster values as float32 (NaN where no valid pixel lies under a chip pixel: the trainer turns those into the
classifier's 0, as Classify objects does). Features are split by the blocks of :mod:`training.split` without a gap:
a chip is kept when every block it touches has one split, so no chip of one split shares a pixel with a chip of the
other (a gap of a whole chip, as the grid exports keep, would drop most features where chips are large). The run
reads the layer's envelopes once, then streams chip by chip into a hidden folder published whole at the end
(:func:`training.export.publish_folder`): a failed or cancelled run leaves nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from osgeo import gdal

from ..objects.chips import ChipReader, feature_chip_box, footprint_window, outer_window
from ..tiling.callbacks import Callbacks, check_cancel
from ..tiling.reader import InputTransform
from ..tiling.window import Window
from .errors import TrainingDataError
from .export import (
    check_chip_size,
    check_disk_space,
    check_output,
    chips_per_split,
    open_north_up,
    publish_folder,
    split_plan,
    split_text,
    window_entry,
    write_image_chip,
)
from .labels import IGNORE
from .layout import ChipStatistics
from .object_boxes import envelope_pixels, read_box_labels
from .object_layout import box_counts, write_tiles_layout
from .split import TRAIN, VALIDATION
from .voc import write_voc


@dataclass(frozen=True)
class TilesExportRequest:
    """What to export.

    Attributes:
        raster: the image raster (any GDAL raster, north-up).
        output: the folder to create (it may exist empty; a non-empty earlier export only with ``overwrite``).
        features: (WKB in the raster's CRS, class attribute) per feature of the point or polygon layer.
        classes: the class table (value, name, colour); None: derived from the class attribute.
        bands: 1-based band numbers (empty: all).
        chip_size: the chips' width and height, px (the classifier's input).
        buffer: map units added on every side of a feature's extent made square.
        chip_pixels: a square of that many raster pixels centred on each feature instead (None: extent + buffer).
        block_size: side of the split blocks, map units (None: 10 median chips, in raster pixels).
        validation_fraction: the share of blocks that go to validation; seed: the draw's seed.
    """

    raster: str
    output: str
    features: Sequence[tuple[bytes, object]]
    classes: Sequence[dict] | None = None
    bands: tuple[int, ...] = ()
    chip_size: int = 64
    buffer: float = 0.0
    chip_pixels: int | None = None
    block_size: float | None = None
    validation_fraction: float = 0.2
    seed: int = 0
    overwrite: bool = False
    label_field: str = ""
    inputs: tuple[str, ...] = ()
    """Other files the run reads (the layer's file): the output folder must not hold them."""


@dataclass
class TilesExportResult:
    """The written folder and what it holds."""

    folder: Path
    chips: dict[str, int] = field(default_factory=dict)
    """Chips per split."""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """Split → class value (text) → chips."""
    skipped: dict[str, int] = field(default_factory=dict)


def export_labeled_tiles(request: TilesExportRequest, callbacks: Callbacks | None = None) -> TilesExportResult:
    """Write one chip and one VOC file per feature, ``manifest.json`` and Esri's Labeled_Tiles files."""
    gdal.UseExceptions()
    callbacks = callbacks or Callbacks()
    output = Path(request.output)
    check_output(output, request.overwrite, (request.raster, *request.inputs))
    source, bands = open_north_up(request.raster, request.bands)
    check_chip_size(request.chip_size, 1)
    if not (np.isfinite(request.buffer) and request.buffer >= 0):
        raise TrainingDataError(f"The buffer {request.buffer!r} must be a number ≥ 0 (map units of the raster's CRS).")
    callbacks.stage("Reading the features")
    labels = read_box_labels(request.features, source.geotransform, request.classes, in_pixels=False)
    if labels.skipped_unlabelled:
        callbacks.warning(f"{labels.skipped_unlabelled} feature(s) without a geometry or a class value skipped.")
    places = _chip_places(request, source, labels.boxes)
    if not places:
        raise TrainingDataError(f"None of the {len(labels.boxes)} features lies on the raster: the layer covers "
                                "another place. Check the layer and its CRS.")
    windows = [w for _, _, w in places]
    median = max(1, int(np.median([w.width for w in windows])))
    plan, block = split_plan(request, source, windows, source.window, median, gap=0)
    check_disk_space(output, len(plan.chips) * request.chip_size ** 2 * len(bands) * 4)
    skipped = {"outside": len(labels.boxes) - len(places), "nodata": 0, "gap": plan.dropped_by_gap}

    def write(temp: Path) -> list[dict]:
        records, stats = _write_chips(request, source, bands, labels, places, plan, temp, skipped, callbacks)
        write_tiles_layout(temp, request, source, bands, labels.classes, records, stats, plan, block)
        return records

    records = publish_folder(output, write, callbacks)
    return TilesExportResult(output, chips_per_split(records), box_counts(records, labels.classes), skipped)


def _chip_places(request: TilesExportRequest, source, envelopes: np.ndarray
                 ) -> list[tuple[int, tuple[float, float, float, float], Window]]:
    """Per feature on the raster: its index, its chip box (raster pixels) and the raster pixels the chip covers."""
    places = []
    for i, envelope in enumerate(envelopes):
        envelope = tuple(float(v) for v in envelope)
        if footprint_window(envelope, source.geotransform).intersection(source.window).is_empty:
            continue
        box = feature_chip_box(envelope, source.geotransform, request.buffer, request.chip_pixels, request.chip_size)
        window = outer_window(box).intersection(source.window)
        if not window.is_empty:
            places.append((i, box, window))
    return places


def _label_box(envelope: Sequence[float], box: Sequence[float], geotransform: Sequence[float], size: int
               ) -> tuple[np.ndarray, bool]:
    """The feature's envelope in the chip's pixels (clipped; the whole chip for a point) and whether it was cut."""
    c0, r0, c1, r1 = envelope_pixels(envelope, geotransform)
    sx, sy = size / (box[2] - box[0]), size / (box[3] - box[1])
    inside = np.array([(c0 - box[0]) * sx, (r0 - box[1]) * sy, (c1 - box[0]) * sx, (r1 - box[1]) * sy])
    clipped = inside.clip(0, size)
    if clipped[2] - clipped[0] <= 0 or clipped[3] - clipped[1] <= 0:
        return np.array([[0.0, 0.0, size, size]]), False
    return clipped[None], bool(np.abs(clipped - inside).max() > 1e-9)


def _write_chips(request: TilesExportRequest, source, bands: tuple[int, ...], labels, places, plan, folder: Path,
                 skipped: dict[str, int], callbacks: Callbacks) -> tuple[list[dict], ChipStatistics]:
    """Every feature's chip, its VOC file and its record, in layer order; band statistics of the training chips."""
    size = request.chip_size
    split_of = {(w.col_off, w.row_off, w.width, w.height): s for w, s in plan.chips}
    names = {c["value"]: str(c["name"]) for c in labels.classes}
    stats = ChipStatistics(len(bands), [])
    records: list[dict] = []
    gt = source.geotransform
    callbacks.stage("Writing chips")
    with ChipReader(source, InputTransform(bands=bands), size, fill=np.nan) as reader:
        for n, (i, box, window) in enumerate(places):
            check_cancel(callbacks)
            callbacks.progress(0.95 * n / len(places))
            split = split_of.get((window.col_off, window.row_off, window.width, window.height))
            if split is None:
                continue
            envelope = tuple(float(v) for v in labels.boxes[i])
            read = reader.read(box, footprint_window(envelope, gt))
            if read.chip is None:
                skipped[read.reason] = skipped.get(read.reason, 0) + 1
                continue
            stem = f"{len(records):09d}"
            value = int(labels.values[i])
            chip_gt = (gt[0] + box[0] * gt[1], (box[2] - box[0]) * gt[1] / size, 0.0,
                       gt[3] + box[1] * gt[5], 0.0, (box[3] - box[1]) * gt[5] / size)
            write_image_chip(folder / "images" / f"{stem}.tif", source, bands,
                             {b: read.chip[k] for k, b in enumerate(bands)}, Window(0, 0, size, size),
                             gdal.GDT_Float32, chip_gt, float("nan"))
            label_box, cut = _label_box(envelope, box, gt, size)
            write_voc(folder / "labels" / f"{stem}.xml", f"{stem}.tif", (size, size, len(bands)), label_box,
                      [names[value]], [cut])
            valid = np.isfinite(read.chip).all(axis=0)
            stats.add(split, list(read.chip), valid, np.full(valid.shape, IGNORE, np.uint8))
            records.append({"image": f"images/{stem}.tif", "label": f"labels/{stem}.xml", "split": split,
                            "window": window_entry(window), "values": [value], "feature": i})
    _check_records(records, labels.classes, skipped)
    callbacks.info(f"{len(records)} chips written: {split_text(records)}; skipped: {skipped['outside']} feature(s) "
                   f"off the raster, {skipped['nodata']} on nodata, {skipped['gap']} across blocks of both splits.")
    return records, stats


def _check_records(records: list[dict], classes: Sequence[dict], skipped: dict[str, int]) -> None:
    """Both splits hold chips, and every class has chips in the training split."""
    for split, what in ((TRAIN, "training"), (VALIDATION, "validation")):
        if not any(r["split"] == split for r in records):
            raise TrainingDataError(
                f"No {what} chip is left (chips kept: {len(records)}; {skipped['gap']} lay across blocks of both "
                "splits). Choose another block size or seed, or a layer with more features.")
    counts = box_counts(records, classes)
    missing = [f"{c['name']} ({c['value']})" for c in classes if not counts[TRAIN][str(c["value"])]]
    if missing:
        raise TrainingDataError(f"Class(es) {', '.join(missing)} have no chip in the training split. Choose another "
                                "seed or a smaller block size, or leave the class out of the layer.")
