"""What an export folder holds besides its chips.

- ``manifest.json`` (ours, :data:`FORMAT` version :data:`FORMAT_VERSION`): bands with descriptions, class table,
  per-band mean/std of the valid pixels of the **training** chips, pixel size, CRS, chip size, stride, ignore value,
  the split (blocks, seed, fraction), every chip (files, split, pixel window) and pixel counts per class and split.
- Esri's *Classified_Tiles* layout, over the same ``images/`` and ``labels/`` (each chip with its ``.tfw`` world
  file): ``esri_model_definition.emd`` (classes as Value/Name/Color, tile size, band names and per-band statistics
  as ArcGIS Pro's exports carry them), ``esri_accumulated_stats.json`` (MetaDataMode, tile size, cell size,
  ClassPixelStats, BandStatsState), ``map.txt`` (image and label path per line) and ``stats.txt``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from osgeo import osr

from ..tiling.source import RasterSource
from .labels import IGNORE
from .split import TRAIN, VALIDATION, SplitPlan

FORMAT = "deepraster-training-chips"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ESRI_FILES = ("esri_model_definition.emd", "esri_accumulated_stats.json", "map.txt", "stats.txt")


class ChipStatistics:
    """Running per-class pixel counts per split, and per-band statistics of the valid pixels of training chips
    (sums shifted by the first chip's mean, so the variance keeps its precision)."""

    def __init__(self, bands: int, values: Sequence[int]) -> None:
        self.pixel_counts: dict[str, dict[int, int]] = {TRAIN: {}, VALIDATION: {}}
        self.images_per_class: dict[int, int] = {}
        self.values = list(values)
        self.n = 0
        self.shift = np.zeros(bands)
        self.s1 = np.zeros(bands)
        self.s2 = np.zeros(bands)
        self.minimum = np.full(bands, np.inf)
        self.maximum = np.full(bands, -np.inf)

    def add(self, split: str, arrays: list[np.ndarray], valid: np.ndarray, label: np.ndarray) -> None:
        counts = np.bincount(label.ravel(), minlength=256)
        for value in np.flatnonzero(counts[:IGNORE]):
            self.pixel_counts[split][int(value)] = self.pixel_counts[split].get(int(value), 0) + int(counts[value])
            self.images_per_class[int(value)] = self.images_per_class.get(int(value), 0) + 1
        if split != TRAIN:
            return
        pixels = np.stack([a[valid] for a in arrays]).astype(np.float64)  # bands × valid pixels
        if not self.n:
            self.shift = pixels.mean(axis=1)
        centred = pixels - self.shift[:, None]
        self.n += pixels.shape[1]
        self.s1 += centred.sum(axis=1)
        self.s2 += (centred ** 2).sum(axis=1)
        self.minimum = np.minimum(self.minimum, pixels.min(axis=1))
        self.maximum = np.maximum(self.maximum, pixels.max(axis=1))

    @property
    def mean(self) -> list[float]:
        return (self.shift + self.s1 / max(self.n, 1)).tolist()

    @property
    def std(self) -> list[float]:
        m = self.s1 / max(self.n, 1)
        return np.sqrt(np.maximum(self.s2 / max(self.n, 1) - m * m, 0.0)).tolist()


def _epsg(wkt: str) -> int | None:
    srs = osr.SpatialReference(wkt=wkt) if wkt else None
    if srs is None:
        return None
    srs.AutoIdentifyEPSG()
    code = srs.GetAuthorityCode(None)
    return int(code) if code and code.isdigit() else None


def _rgb(colour: str) -> list[int]:
    return [int(colour[k:k + 2], 16) for k in (1, 3, 5)]


def band_entries(source: RasterSource, bands: tuple[int, ...]) -> list[dict]:
    """The manifest's ``bands``: index (1-based, chip order), source band, description and nodata per band."""
    return [{"index": i, "source_band": b, "description": source.descriptions[b - 1] or f"band {b}",
             "nodata": source.nodata[b - 1]} for i, b in enumerate(bands, 1)]


def statistics_entry(stats: ChipStatistics) -> dict:
    """The manifest's ``statistics``: valid pixels of the training chips and per-band mean, std, min, max (raster
    units)."""
    return {"computed_from": TRAIN, "pixels": stats.n, "mean": stats.mean, "std": stats.std,
            "min": stats.minimum.tolist(), "max": stats.maximum.tolist()}


def split_entry(request, plan: SplitPlan, block: float, origin: list[int] | None = None) -> dict:
    """The manifest's ``split``: spatial blocks of ``block`` map units, seed, fraction, the blocks' origin (px, when
    given) and every block's split."""
    entry = {"method": "spatial_blocks", "block_size": block, "block_size_px": list(plan.block_pixels),
             "validation_fraction": request.validation_fraction, "seed": request.seed, "gap_chips": 1}
    if origin is not None:
        entry["origin_px"] = origin
    entry["blocks"] = [{"block": list(b), "split": s} for b, s in sorted(plan.blocks.items())]
    return entry


def write_layout(folder: Path, request, source: RasterSource, bands: tuple[int, ...], classes: Sequence[dict],
                 records: list[dict], stats: ChipStatistics, plan: SplitPlan, sizes: tuple[int, int, float]) -> None:
    """Write ``manifest.json`` and the Esri files into ``folder`` (see the module docstring)."""
    chip, stride, block = sizes
    gt = source.geotransform
    counts = {split: {str(c["value"]): stats.pixel_counts[split].get(c["value"], 0) for c in classes}
              for split in (TRAIN, VALIDATION)}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "source": str(source.path),
        "bands": band_entries(source, bands), "data_type": source.dtypes[bands[0] - 1],
        "classes": [dict(c) for c in classes], "ignore_value": IGNORE, "background": bool(request.background),
        "label_field": request.label_field or None,
        "statistics": statistics_entry(stats),
        "pixel_size": [gt[1], gt[5]], "crs_wkt": source.projection, "epsg": _epsg(source.projection),
        "chip_size": chip, "stride": stride, "min_labelled_fraction": request.min_labelled,
        "split": split_entry(request, plan, block,
                             [request.region.col_off, request.region.row_off] if request.region else [0, 0]),
        "pixel_counts": counts,
        "chips": records,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    _write_esri(folder, source, bands, classes, records, stats, chip)


WELL_KNOWN_BANDS = "WellKnownBandNames (FYI, these band names can be used in ExtractBands)"
"""An .emd key of ArcGIS Pro's exports that arcgis.learn's ``prepare_data`` indexes directly for 3-band data."""


def _band_stats(stats: ChipStatistics, i: int) -> dict[str, float]:
    return {"Min": float(stats.minimum[i]), "Max": float(stats.maximum[i]), "Mean": stats.mean[i],
            "StdDev": stats.std[i]}


def esri_classes(classes: Sequence[dict]) -> list[dict]:
    """The class table as Esri's files list it (Value, Name, Color as [r, g, b])."""
    return [{"Value": c["value"], "Name": c["name"], "Color": _rgb(c["color"])} for c in classes]


def model_definition(source: RasterSource, bands: tuple[int, ...], classes: Sequence[dict], stats: ChipStatistics,
                     chip: int, model_type: str, mode: str) -> dict:
    """Esri's ``esri_model_definition.emd`` of a ``mode`` export for a ``model_type`` model (chip size px, band
    names, per-band statistics of the training chips, classes)."""
    names = [source.descriptions[b - 1] or f"band {b}" for b in bands]
    return {"Framework": "", "ModelConfiguration": "", "ModelType": model_type,
            "ImageHeight": chip, "ImageWidth": chip, "ExtractBands": list(range(len(bands))),
            "DataRange": [float(np.min(stats.minimum)), float(np.max(stats.maximum))] if stats.n else None,
            "MetaDataMode": mode, "ImageSpaceUsed": "MAP_SPACE",
            "InputRastersProps": {"RasterCount": 1, "SensorName": "", "BandNames": names},
            "AllTilesStats": _all_band_stats(stats, bands), WELL_KNOWN_BANDS: names, "Classes": esri_classes(classes)}


def _all_band_stats(stats: ChipStatistics, bands: tuple[int, ...]) -> list[dict[str, float]]:
    return [_band_stats(stats, i) for i in range(len(bands))] if stats.n else []


def accumulated_stats(source: RasterSource, bands: tuple[int, ...], classes: Sequence[dict], records: list[dict],
                      stats: ChipStatistics, chip: int, mode: str, head: dict, class_stats: dict) -> dict:
    """Esri's ``esri_accumulated_stats.json`` of a ``mode`` export: ``head`` after the mode and image space, then
    tiles, sizes (px), cell size and spatial reference, classes, ``class_stats`` (one key: its per-class counts)
    and the per-band accumulated statistics (Min, Max, M1 = mean, M2 = sum of squared deviations, Num = pixels)."""
    gt = source.geotransform
    cell = {"x": abs(gt[1]), "y": abs(gt[5])}
    epsg = _epsg(source.projection)
    m2 = (np.asarray(stats.std) ** 2 * stats.n).tolist()
    return {
        "MetaDataMode": mode, "ImageSpaceUsed": "MAP_SPACE", **head,
        "NumTiles": len(records), "TileSizeX": chip, "TileSizeY": chip, "NumBands": len(bands),
        "NumClasses": len(classes), "MinCellSize": cell, "MaxCellSize": cell,
        "SpatialReference": {"wkid": epsg} if epsg else {"wkt": source.projection},
        "Classes": esri_classes(classes),
        **class_stats,
        "BandStatsState": [{"Min": b["Min"], "Max": b["Max"], "M1": b["Mean"], "M2": m2[i], "Num": stats.n}
                           for i, b in enumerate(_all_band_stats(stats, bands))],
    }


def write_esri_files(folder: Path, emd: dict, accumulated: dict, records: list[dict], chip: int, bands: int,
                     count_name: str, rows: list[str]) -> None:
    """Write the .emd, esri_accumulated_stats.json, ``map.txt`` (image and label path per record, Windows
    separators) and ``stats.txt`` (tiles, tile size px, bands, then ``rows`` under a header naming ``count_name``)."""
    (folder / "esri_model_definition.emd").write_text(json.dumps(emd, indent=1), encoding="utf-8")
    (folder / "esri_accumulated_stats.json").write_text(json.dumps(accumulated, indent=1), encoding="utf-8")
    lines = [f"{r['image'].replace('/', chr(92))} {r['label'].replace('/', chr(92))}" for r in records]
    (folder / "map.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = [f"Number of tiles: {len(records)}", f"Tile size: {chip} x {chip}", f"Number of bands: {bands}",
               f"ClassValue, ClassName, {count_name}, NumImages", *rows]
    (folder / "stats.txt").write_text("\n".join(summary) + "\n", encoding="utf-8")


def _write_esri(folder: Path, source: RasterSource, bands: tuple[int, ...], classes: Sequence[dict],
                records: list[dict], stats: ChipStatistics, chip: int) -> None:
    """Esri's Classified_Tiles files, with the keys arcgis.learn's ``prepare_data`` reads: in the .emd ``Classes``,
    ``ImageSpaceUsed``, ``InputRastersProps`` (band names) and ``AllTilesStats`` (per-band Min/Max/Mean/StdDev, here
    of the training chips); in esri_accumulated_stats.json ``MetaDataMode``, ``ClassPixelStats`` and
    ``BandStatsState`` (Min, Max, M1 = mean, M2 = sum of squared deviations, Num = pixels)."""
    mode = "Classified_Tiles"
    total = [stats.pixel_counts[TRAIN].get(c["value"], 0) + stats.pixel_counts[VALIDATION].get(c["value"], 0)
             for c in classes]
    class_stats = {"ClassPixelStats": {
        "NumClasses": len(classes), "NumImagesTotal": len(records),
        "NumImagesPerClass": [stats.images_per_class.get(c["value"], 0) for c in classes],
        "NumPixelsPerClass": total}}
    accumulated = accumulated_stats(source, bands, classes, records, stats, chip, mode, {"OutputFeatures": False},
                                    class_stats)
    write_esri_files(folder, model_definition(source, bands, classes, stats, chip, "ImageClassification", mode),
                     accumulated, records, chip, len(bands), "NumPixels",
                     [f"{c['value']}, {c['name']}, {n}, {stats.images_per_class.get(c['value'], 0)}"
                      for c, n in zip(classes, total, strict=True)])
