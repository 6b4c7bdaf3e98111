"""What an object training-data folder holds besides its image chips and VOC files.

- ``manifest.json`` (ours, :data:`OBJECT_FORMAT` version :data:`OBJECT_FORMAT_VERSION`): bands, class table,
  per-band statistics of the valid pixels of the **training** chips, pixel size, CRS, chip size, stride, the least
  visible fraction of a clipped box, the split (blocks, seed, fraction), every chip (files, split, pixel window,
  boxes) and box counts per class and split.
- COCO JSON per split: ``coco_train.json`` and ``coco_validation.json`` (:func:`training.voc.write_coco`).
- Esri's *PASCAL_VOC_rectangles* (or *KITTI_rectangles*) layout over the same ``images/`` (chips with world
  files) and ``labels/`` (VOC XML, or KITTI text files): ``esri_model_definition.emd`` (``ModelType``
  ObjectDetection, classes, band names and statistics), ``esri_accumulated_stats.json``, ``map.txt`` (image and
  label path per line) and ``stats.txt``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..tiling.source import RasterSource
from .layout import (
    ChipStatistics,
    _epsg,
    accumulated_stats,
    band_entries,
    model_definition,
    split_entry,
    statistics_entry,
    write_esri_files,
)
from .split import TRAIN, VALIDATION, SplitPlan
from .voc import write_coco

OBJECT_FORMAT = "deepraster-object-chips"
OBJECT_FORMAT_VERSION = 1
COCO_FILES = {TRAIN: "coco_train.json", VALIDATION: "coco_validation.json"}
ESRI_MODE = "PASCAL_VOC_rectangles"


def box_counts(records: Sequence[dict], classes: Sequence[dict]) -> dict[str, dict[str, int]]:
    """Boxes per split and class value (as text)."""
    counts = {split: {str(c["value"]): 0 for c in classes} for split in (TRAIN, VALIDATION)}
    for record in records:
        for value in record["values"]:
            counts[record["split"]][str(int(value))] += 1
    return counts


def write_object_layout(folder: Path, request, source: RasterSource, bands: tuple[int, ...], classes: Sequence[dict],
                        records: list[dict], stats: ChipStatistics, plan: SplitPlan,
                        sizes: tuple[int, int, float]) -> None:
    """Write ``manifest.json``, the COCO files and Esri's files into ``folder`` (see the module docstring).
    ``records``: per chip ``image``, ``label``, ``split``, ``window``, ``boxes`` (K, 4) chip pixels, ``values``."""
    chip, stride, block = sizes
    gt = source.geotransform
    counts = box_counts(records, classes)
    manifest = {
        "format": OBJECT_FORMAT, "format_version": OBJECT_FORMAT_VERSION, "source": str(source.path),
        "bands": band_entries(source, bands),
        "data_type": source.dtypes[bands[0] - 1], "classes": [dict(c) for c in classes],
        "label_field": request.label_field or None,
        "statistics": statistics_entry(stats),
        "pixel_size": [gt[1], gt[5]], "crs_wkt": source.projection, "epsg": _epsg(source.projection),
        "chip_size": chip, "stride": stride, "min_visible_fraction": request.min_visible,
        "keep_empty": request.keep_empty,
        "box_format": f"x1 y1 x2 y2, chip pixels ({request.label_format} in labels/)",
        "split": split_entry(request, plan, block),
        "box_counts": counts, "coco": dict(COCO_FILES),
        "chips": [{"image": r["image"], "label": r["label"], "split": r["split"], "window": r["window"],
                   "boxes": len(r["values"])} for r in records],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    for split, name in COCO_FILES.items():
        write_coco(folder / name, [r for r in records if r["split"] == split], classes, chip)
    _write_esri(folder, source, bands, classes, records, stats, chip, counts, mode=request.label_format)


def _write_esri(folder: Path, source: RasterSource, bands: tuple[int, ...], classes: Sequence[dict],
                records: list[dict], stats: ChipStatistics, chip: int, counts: dict[str, dict[str, int]],
                model_type: str = "ObjectDetection", mode: str = ESRI_MODE) -> None:
    """Esri's files of a ``mode`` export (PASCAL_VOC_rectangles, Labeled_Tiles) for a ``model_type`` model (keys as
    ArcGIS Pro's *Export Training Data For Deep Learning* writes)."""
    per_class = [counts[TRAIN][str(c["value"])] + counts[VALIDATION][str(c["value"])] for c in classes]
    images = [sum(1 for r in records if c["value"] in set(np.asarray(r["values"]).tolist())) for c in classes]
    class_stats = {"FeatureStats": {"NumFeatures": sum(per_class), "NumFeaturesPerClass": per_class,
                                    "NumImagesPerClass": images, "NumImagesTotal": len(records)}}
    accumulated = accumulated_stats(source, bands, classes, records, stats, chip, mode, {}, class_stats)
    write_esri_files(folder, model_definition(source, bands, classes, stats, chip, model_type, mode),
                     accumulated, records, chip, len(bands), "NumFeatures",
                     [f"{c['value']}, {c['name']}, {n}, {k}" for c, n, k in zip(classes, per_class, images,
                                                                                  strict=True)])


TILES_FORMAT = "deepraster-labeled-tiles"
TILES_FORMAT_VERSION = 1
TILES_MODE = "Labeled_Tiles"


def write_tiles_layout(folder: Path, request, source: RasterSource, bands: tuple[int, ...], classes: Sequence[dict],
                       records: list[dict], stats: ChipStatistics, plan: SplitPlan, block: float) -> None:
    """Write ``manifest.json`` (:data:`TILES_FORMAT`) and Esri's Labeled_Tiles files of an object classification
    export into ``folder``. ``records``: per chip ``image``, ``label``, ``split``, ``window`` (the chip's raster
    pixels), ``values`` (its one class value) and ``feature`` (its index in layer order)."""
    gt = source.geotransform
    counts = box_counts(records, classes)
    manifest = {
        "format": TILES_FORMAT, "format_version": TILES_FORMAT_VERSION, "source": str(source.path),
        "bands": band_entries(source, bands), "data_type": "Float32", "nodata": "NaN (no valid pixel under it)",
        "classes": [dict(c) for c in classes], "label_field": request.label_field or None,
        "statistics": statistics_entry(stats),
        "pixel_size": [gt[1], gt[5]], "crs_wkt": source.projection, "epsg": _epsg(source.projection),
        "chip_size": request.chip_size, "buffer": request.buffer, "chip_pixels": request.chip_pixels,
        "chip": "the feature's extent made square plus the buffer (map units), or chip_pixels raster px centred on "
                "it (points without a buffer: chip_size raster px), resampled to chip_size px as Classify objects "
                "reads it",
        "split": split_entry(request, plan, block),
        "tile_counts": counts,
        "chips": [{"image": r["image"], "label": r["label"], "split": r["split"], "window": r["window"],
                   "value": int(r["values"][0]), "feature": r["feature"]} for r in records],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    _write_esri(folder, source, bands, classes, records, stats, request.chip_size, counts, "ObjectClassification",
                TILES_MODE)
