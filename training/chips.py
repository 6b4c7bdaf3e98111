"""Reading a folder of training chips back, in either layout, for the training step.

- Ours: ``manifest.json`` (see :mod:`training.layout`) lists every chip with its split, the class table, the ignore
  value and the band statistics of the training chips.
- Esri's *Classified_Tiles* (ArcGIS Pro's *Export Training Data For Deep Learning*): ``images/`` and ``labels/``
  with chips of the same names, ``esri_model_definition.emd`` (``Classes``: Value, Name, Color as [r, g, b];
  band names and statistics in ``InputRastersProps`` and ``AllTilesStats``), ``esri_accumulated_stats.json`` and
  ``map.txt`` (image and label paths, Windows or POSIX separators). Such a
  folder carries no split (``split`` is None: the training step draws one) and no ignore value (0 is background).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ChipFolderError
from .layout import FORMAT, FORMAT_VERSION, MANIFEST

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".mrf")


@dataclass(frozen=True)
class Chip:
    """One chip: its image and label files and its split ("train", "validation", or None when not assigned)."""

    image: Path
    label: Path
    split: str | None
    window: tuple[int, int, int, int] | None = None
    """(column, row, width, height) in the source raster's pixels; None when not recorded."""


@dataclass(frozen=True)
class ChipFolder:
    """A folder of chips as the training step sees it."""

    layout: str
    """``"deepraster"`` or ``"esri"``."""
    chips: list[Chip]
    classes: list[dict]
    """(value, name, colour ``#rrggbb``) per class."""
    ignore_value: int | None
    chip_size: int | None
    mean: list[float] | None
    """Per-band mean of the training chips (None: not recorded)."""
    std: list[float] | None
    bands: list[str]
    """Band descriptions (empty when not recorded)."""
    pixel_counts: dict[str, dict[str, int]] | None = None
    """Labelled pixels per split ("train", "validation") and class value (as text); None when not recorded."""


def read_chip_folder(folder: str | Path) -> ChipFolder:
    """The chips, class table and statistics of ``folder`` (ours when it holds ``manifest.json``, else Esri's)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ChipFolderError(f"{folder} is not a folder. Choose the folder an export of training data wrote.")
    if (folder / MANIFEST).is_file():
        return _ours(folder)
    if (folder / "esri_model_definition.emd").is_file() or (folder / "map.txt").is_file():
        return _esri(folder)
    raise ChipFolderError(f"{folder} holds neither {MANIFEST} (Deep Raster's export) nor esri_model_definition.emd / "
                          "map.txt (Esri's Classified_Tiles). Choose the folder an export wrote.")


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise ChipFolderError(f"Cannot read {path} ({exc}).") from exc
    if not isinstance(data, dict):
        raise ChipFolderError(f"{path} is not a JSON object.")
    return data


def map_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """The (image, label) paths of Esri's ``map.txt`` in ``folder``, one pair a line (Windows or POSIX separators;
    lines without two paths are passed over)."""
    lines = (folder / "map.txt").read_text(encoding="utf-8-sig").splitlines()
    pairs = [line.replace("\\", "/").split() for line in lines]
    return [(folder / p[0], folder / p[-1]) for p in pairs if len(p) >= 2]


def _checked(folder: Path, chips: list[Chip]) -> list[Chip]:
    missing = [str(p.relative_to(folder)) for c in chips for p in (c.image, c.label) if not p.is_file()]
    if missing:
        raise ChipFolderError(f"{len(missing)} chip file(s) listed in {folder} are missing (e.g. {missing[0]}). Copy "
                              "the complete folder, or export again.")
    if not chips:
        raise ChipFolderError(f"{folder} lists no chips.")
    return chips


def _ours(folder: Path) -> ChipFolder:
    manifest = _json(folder / MANIFEST)
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("format_version"), int):
        raise ChipFolderError(f"{folder / MANIFEST} is not a Deep Raster chip manifest.")
    if manifest["format_version"] > FORMAT_VERSION:
        raise ChipFolderError(f"{folder / MANIFEST} has format version {manifest['format_version']}; this plugin "
                              f"reads up to {FORMAT_VERSION}. Update the plugin.")
    try:
        chips = [Chip(folder / c["image"], folder / c["label"], c["split"],
                      tuple(c["window"]) if c.get("window") else None) for c in manifest["chips"]]
        stats = manifest["statistics"]
        return ChipFolder("deepraster", _checked(folder, chips), list(manifest["classes"]),
                          manifest["ignore_value"], manifest["chip_size"], stats["mean"], stats["std"],
                          [b["description"] for b in manifest["bands"]], manifest.get("pixel_counts"))
    except (KeyError, TypeError) as exc:
        raise ChipFolderError(f"{folder / MANIFEST} lacks {exc}: export the chips again.") from exc


def _esri_classes(emd: dict, where: Path) -> list[dict]:
    classes = []
    for entry in emd.get("Classes") or []:
        value = entry.get("Value", entry.get("ClassValue"))
        name = entry.get("Name", entry.get("ClassName", f"class {value}"))
        rgb = entry.get("Color") or [128, 128, 128]
        if not isinstance(value, int):
            raise ChipFolderError(f"{where}: class {entry!r} has no whole-number Value.")
        classes.append({"value": value, "name": str(name), "color": "#{:02x}{:02x}{:02x}".format(*rgb[:3])})
    if not classes:
        raise ChipFolderError(f"{where} lists no Classes: it is not a Classified_Tiles export.")
    return classes


def _esri(folder: Path) -> ChipFolder:
    emd_path = folder / "esri_model_definition.emd"
    if not emd_path.is_file():
        raise ChipFolderError(f"{folder} has no esri_model_definition.emd: the class table is unknown.")
    emd = _json(emd_path)
    stats_path = folder / "esri_accumulated_stats.json"
    stats = _json(stats_path) if stats_path.is_file() else {}
    mode = stats.get("MetaDataMode")
    if mode not in (None, "Classified_Tiles"):
        raise ChipFolderError(f"{folder} holds {mode} training data; segmentation needs Classified_Tiles.")
    if (folder / "map.txt").is_file():
        chips = [Chip(image, label, None) for image, label in map_pairs(folder)]
    else:
        chips = [Chip(p, folder / "labels" / p.name, None) for p in sorted((folder / "images").glob("*"))
                 if p.suffix.lower() in IMAGE_SUFFIXES]
    mean, std, bands = _esri_band_statistics(emd, stats, folder)
    size = stats.get("TileSizeX") or emd.get("ImageWidth")
    return ChipFolder("esri", _checked(folder, chips), _esri_classes(emd, emd_path), None,
                      int(size) if size else None, mean, std, bands)


def _esri_band_statistics(emd: dict, stats: dict, where: Path) -> tuple[list[float] | None, list[float] | None,
                                                                         list[str]]:
    """Per-band mean, std and band names of an Esri folder: the .emd's ``AllTilesStats`` and
    ``InputRastersProps.BandNames`` (ArcGIS Pro 2.7 and later), else ``BandStatsState`` of the accumulated
    statistics (M1, sqrt(M2 / Num)), else the ``BandStats`` that Deep Raster wrote before; (None, None, names) when
    none is recorded."""
    props = emd.get("InputRastersProps") if isinstance(emd.get("InputRastersProps"), dict) else {}
    names = [str(n) for n in props.get("BandNames") or []]
    try:
        if emd.get("AllTilesStats"):
            rows = emd["AllTilesStats"]
            return [float(b["Mean"]) for b in rows], [float(b["StdDev"]) for b in rows], names
        if stats.get("BandStatsState"):
            rows = stats["BandStatsState"]
            return ([float(b["M1"]) for b in rows], [(float(b["M2"]) / max(float(b["Num"]), 1.0)) ** 0.5 for b in rows],
                    names)
        rows = stats.get("BandStats") or []
        if rows:
            return ([float(b["Mean"]) for b in rows], [float(b["StdDev"]) for b in rows],
                    names or [str(b.get("BandName", "")) for b in rows])
    except (KeyError, TypeError, ValueError) as exc:
        raise ChipFolderError(f"{where}: the band statistics lack {exc} (Mean/StdDev, or M1/M2/Num): export "
                              "again.") from exc
    return None, None, names
