"""Export object training data: image chips of a raster with the boxes of a box layer, split by spatial blocks.

Each feature's envelope is a box. A chip keeps every box of which at least ``min_visible`` of the area lies inside
it, clipped to the chip (``truncated`` in VOC); boxes mostly outside are dropped. The chips and the split are those
of the segmentation export (:mod:`training.split`: full chips every ``stride`` px, blocks drawn as validation, a gap
of one chip between the splits), so no box is in both. The run streams chip by chip (one chip's bands read with
GDAL, its boxes found through a grid index) into a hidden folder published whole at the end
(:func:`tiling.transaction.stage`): a failed or cancelled run leaves nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from osgeo import gdal

from ..tiling.callbacks import Callbacks, check_cancel
from ..tiling.window import Window
from .errors import TrainingDataError
from .export import (
    check_chip_size,
    check_disk_space,
    check_output,
    chip_dtype,
    chips_per_split,
    open_north_up,
    publish_folder,
    read_chip,
    split_plan,
    split_text,
    window_entry,
    write_image_chip,
)
from .kitti import write_kitti
from .labels import IGNORE
from .layout import ChipStatistics
from .object_boxes import BoxIndex, BoxLabels, clip_boxes, oversized, read_box_labels
from .object_layout import write_object_layout
from .split import TRAIN, VALIDATION, chip_windows
from .voc import write_voc

KITTI = "KITTI_rectangles"
LABEL_FORMATS = ("PASCAL_VOC_rectangles", KITTI)
"""Esri's object-detection layouts an export writes its labels in."""


@dataclass(frozen=True)
class ObjectExportRequest:
    """What to export.

    Attributes:
        raster: the image raster (any GDAL raster, north-up).
        output: the folder to create (it may exist empty; a non-empty earlier export only with ``overwrite``).
        boxes: (WKB in the raster's CRS, class attribute) per feature of the box layer (its envelope is the box).
        classes: the class table (value, name, colour); None: derived from the class attribute.
        bands: 1-based band numbers (empty: all).
        chip_size: chip width and height, px; stride: chip spacing, px (None: the chip size).
        min_visible: the least fraction (0–1) of a box's area inside a chip for the chip to keep it (clipped).
        keep_empty: keep chips without any box (negative examples); otherwise they are skipped.
        region: the pixels chips come from (None: the whole raster).
        block_size: side of the split blocks, map units (None: 10 chips).
        validation_fraction: the share of blocks that go to validation; seed: the draw's seed.
    """

    raster: str
    output: str
    boxes: Sequence[tuple[bytes, object]]
    classes: Sequence[dict] | None = None
    bands: tuple[int, ...] = ()
    chip_size: int = 256
    stride: int | None = None
    min_visible: float = 0.5
    keep_empty: bool = False
    region: Window | None = None
    block_size: float | None = None
    validation_fraction: float = 0.2
    seed: int = 0
    overwrite: bool = False
    label_field: str = ""
    inputs: tuple[str, ...] = ()
    """Other files the run reads (the box layer's file): the output folder must not hold them."""
    label_format: str = "PASCAL_VOC_rectangles"
    """Esri's layout of the label files: ``PASCAL_VOC_rectangles`` (labels/*.xml) or ``KITTI_rectangles``
    (labels/*.txt, :mod:`training.kitti`); map.txt, the .emd and the manifest point to them."""


@dataclass
class ObjectExportResult:
    """The written folder and what it holds."""

    folder: Path
    chips: dict[str, int] = field(default_factory=dict)
    """Chips per split."""
    boxes: dict[str, dict[str, int]] = field(default_factory=dict)
    """Split → class value (text) → boxes."""
    skipped: dict[str, int] = field(default_factory=dict)


def export_object_training_data(request: ObjectExportRequest, callbacks: Callbacks | None = None
                                ) -> ObjectExportResult:
    """Write the chips, their label files (PASCAL VOC or KITTI), COCO JSON, ``manifest.json`` and Esri's files."""
    from .object_layout import box_counts

    gdal.UseExceptions()
    callbacks = callbacks or Callbacks()
    output = Path(request.output)
    check_output(output, request.overwrite, (request.raster, *request.inputs))
    source, bands = open_north_up(request.raster, request.bands)
    chip, stride = request.chip_size, request.stride or request.chip_size
    check_chip_size(chip, stride)
    if not 0.0 < request.min_visible <= 1.0:
        raise TrainingDataError(f"The minimum visible fraction of a box must be above 0 and at most 1 (got "
                                f"{request.min_visible}).")
    if request.label_format not in LABEL_FORMATS:
        raise TrainingDataError(f"Unknown label format {request.label_format!r}: choose one of "
                                f"{', '.join(LABEL_FORMATS)}.")
    callbacks.stage("Reading the boxes")
    labels = read_box_labels(request.boxes, source.geotransform, request.classes)
    _check_sizes(labels, chip)
    if labels.skipped_unlabelled:
        callbacks.warning(f"{labels.skipped_unlabelled} feature(s) without a geometry or a class value skipped.")
    region = request.region or source.window
    index = BoxIndex(labels.boxes, chip)
    windows = chip_windows(region, chip, stride)
    if not request.keep_empty:  # blocks are drawn among the chips with objects only
        windows = [w for w in windows if len(clip_boxes(labels.boxes[index.near(w)], w, request.min_visible)[0])]
    empty = len(chip_windows(region, chip, stride)) - len(windows)
    if not windows:
        raise TrainingDataError(
            f"None of the {len(labels.boxes)} boxes lies at least {request.min_visible:.0%} inside a chip of the "
            "raster (or extent): the box layer covers another place. Check the layer and its CRS, or the extent.")
    plan, block = split_plan(request, source, windows, region, chip)
    check_disk_space(output, len(plan.chips) * chip * chip * len(bands) * 8)

    def write(temp: Path) -> tuple[list[dict], dict[str, int]]:
        records, stats, skipped = _write_chips(request, source, bands, plan, labels, index, empty, temp, callbacks)
        write_object_layout(temp, request, source, bands, labels.classes, records, stats, plan, (chip, stride, block))
        return records, skipped

    records, skipped = publish_folder(output, write, callbacks)
    return ObjectExportResult(output, chips_per_split(records), box_counts(records, labels.classes), skipped)


def _check_sizes(labels: BoxLabels, chip: int) -> None:
    """Refuse boxes wider or taller than a chip, naming how many and the chip size they need."""
    big = oversized(labels.boxes, chip)
    if len(big):
        sizes = labels.boxes[big, 2:] - labels.boxes[big, :2]
        need = int(np.ceil(sizes.max()))
        raise TrainingDataError(
            f"{len(big)} of {len(labels.boxes)} boxes are larger than a chip of {chip} px (the largest "
            f"{sizes[:, 0].max():.0f} × {sizes[:, 1].max():.0f} px): a detector never sees them whole. Choose a chip "
            f"size of at least {need} px, or leave those features out (e.g. the box of feature "
            f"{int(big[0]) + 1} in layer order).")


def _write_chips(request: ObjectExportRequest, source, bands: tuple[int, ...], plan, labels: BoxLabels,
                 index: BoxIndex, empty: int, folder: Path, callbacks: Callbacks
                 ) -> tuple[list[dict], ChipStatistics, dict[str, int]]:
    """Every kept chip, its VOC file and its record; band statistics of the training chips. ``empty``: chips
    without a box, left out before the split."""
    ds = gdal.Open(source.path)
    dtype = chip_dtype(source, bands)
    stats = ChipStatistics(len(bands), [])
    names = {c["value"]: str(c["name"]) for c in labels.classes}
    records: list[dict] = []
    skipped = {"no_box": empty, "no_valid_pixel": 0, "gap": plan.dropped_by_gap}
    callbacks.stage("Writing chips")
    for i, (window, split) in enumerate(plan.chips):
        check_cancel(callbacks)
        near = index.near(window)
        keep, boxes, cut = clip_boxes(labels.boxes[near], window, request.min_visible)
        values = labels.values[near[keep]]
        by_band, valid = read_chip(ds, source, bands, window)
        if not valid.any():
            skipped["no_valid_pixel"] += 1
            continue
        stem = f"{len(records):09d}"
        write_image_chip(folder / "images" / f"{stem}.tif", source, bands, by_band, window, dtype)
        class_names = [names[int(v)] for v in values]
        if request.label_format == KITTI:
            label = f"labels/{stem}.txt"
            write_kitti(folder / label, boxes, class_names, cut)
        else:
            label = f"labels/{stem}.xml"
            write_voc(folder / label, f"{stem}.tif", (window.width, window.height, len(bands)), boxes, class_names,
                      cut)
        stats.add(split, [by_band[b] for b in bands], valid, np.full(valid.shape, IGNORE, np.uint8))
        records.append({"image": f"images/{stem}.tif", "label": label, "split": split,
                        "window": window_entry(window),
                        "boxes": boxes, "values": values})
        callbacks.progress(0.95 * (i + 1) / len(plan.chips))
    _check_records(records, labels.classes, skipped)
    n_boxes = sum(len(r["values"]) for r in records)
    callbacks.info(f"{len(records)} chips written with {n_boxes} boxes: {split_text(records)}; skipped: "
                   f"{skipped['no_box']} without a box, {skipped['no_valid_pixel']} without a valid pixel, "
                   f"{skipped['gap']} in the one-chip gap between the splits.")
    return records, stats, skipped


def _check_records(records: list[dict], classes: Sequence[dict], skipped: dict[str, int]) -> None:
    """Both splits hold chips, and every class has boxes in the training chips."""
    for split, what in ((TRAIN, "training"), (VALIDATION, "validation")):
        if not any(r["split"] == split for r in records):
            raise TrainingDataError(
                f"No {what} chip is left (chips kept: {len(records)}; {skipped['no_box']} held no box, "
                f"{skipped['gap']} fell in the gap between the splits). Choose a smaller chip size or block size, "
                "another seed, or a box layer covering more of the raster.")
    seen = {int(v) for r in records if r["split"] == TRAIN for v in r["values"]}
    missing = [f"{c['name']} ({c['value']})" for c in classes if c["value"] not in seen]
    if missing:
        raise TrainingDataError(f"Class(es) {', '.join(missing)} have no box in the training chips. Choose another "
                                "seed or a smaller block size, or leave the class out of the box layer.")
