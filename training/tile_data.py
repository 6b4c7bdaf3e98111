"""Labelled tiles (one class per image chip) read back for training an object classifier, in two layouts.

- Ours (``manifest.json`` of format ``deepraster-labeled-tiles``, :func:`training.object_layout.write_tiles_layout`):
  chips with their split, window and class value, the class table and the band statistics of the training chips.
- Esri's *Labeled_Tiles* (ArcGIS Pro's *Export Training Data For Deep Learning*, or ours read as Esri's):
  ``map.txt`` (image and VOC path per line) and ``esri_model_definition.emd`` (``Classes``; without it the classes
  come from the VOC ``<name>``\\s). Each VOC file names the tile's class in its objects' ``<name>`` (every object of
  one tile must name the same class). No split: the training step draws one.

:func:`prepare_tiles` checks the chips (one size, square, one band count), draws a split when the folder has none
and counts the chips per class and split; :class:`TileDataset` reads one chip per item (nothing cached), normalises
it (NaN, the export's "no valid pixel", becomes 0 as in Classify objects) and turns training chips as
:func:`training.dataset.augmentation` draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .chips import _json, map_pairs
from .dataset import (
    ChipDataset,
    InputTransform,
    augmentation,
    by_split,
    class_lookup,
    drawn_validation,
    open_raster,
    read_array,
)
from .errors import ChipFolderError, TrainingDataError
from .object_chips import _derived, _esri_table, class_value
from .object_layout import OBJECT_FORMAT, TILES_FORMAT, TILES_FORMAT_VERSION, TILES_MODE
from .split import TRAIN, VALIDATION
from .voc import read_voc

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Tile:
    """One chip: its image, its class value, its split ("train", "validation", or None when not assigned) and its
    window in the source raster's pixels (None when not recorded)."""

    image: Path
    value: int
    split: str | None
    window: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class TileFolder:
    """Labelled tiles as the training step sees them."""

    layout: str
    """``"deepraster"`` or ``"esri"``."""
    tiles: list[Tile]
    classes: list[dict]
    chip_size: int | None
    mean: list[float] | None
    std: list[float] | None
    bands: list[str]
    chipping: dict | None = None
    """How our export cut the chips (``buffer`` map units, ``chip_pixels``), for Classify objects; None: unknown."""


def read_tile_folder(folder: str | Path) -> TileFolder:
    """The tiles, class table and statistics of ``folder`` (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ChipFolderError(f"{folder} is not a folder. Choose the folder that Export object classification "
                              "training data wrote, or an Esri Labeled_Tiles export.")
    if (folder / MANIFEST).is_file():
        return _ours(folder)
    if (folder / "map.txt").is_file():
        return _esri(folder)
    raise ChipFolderError(f"{folder} holds neither {MANIFEST} (Export object classification training data) nor "
                          "map.txt (Esri's Labeled_Tiles). Choose a labelled tiles folder.")


def _ours(folder: Path) -> TileFolder:
    manifest = _json(folder / MANIFEST)
    if manifest.get("format") != TILES_FORMAT:
        hint = "Train object detector" if manifest.get("format") == OBJECT_FORMAT else "Train segmentation model"
        raise ChipFolderError(f"{folder / MANIFEST} is not a labelled tiles manifest (it is "
                              f"{manifest.get('format')!r}): train it with {hint}, or export the features with "
                              "Export object classification training data.")
    if not isinstance(manifest.get("format_version"), int) or manifest["format_version"] > TILES_FORMAT_VERSION:
        raise ChipFolderError(f"{folder / MANIFEST} has format version {manifest.get('format_version')!r}; this "
                              f"plugin reads up to {TILES_FORMAT_VERSION}. Update the plugin.")
    try:
        tiles = [Tile(folder / c["image"], int(c["value"]), c["split"], tuple(c["window"]) if c.get("window")
                      else None) for c in manifest["chips"]]
        stats = manifest["statistics"]
        return TileFolder("deepraster", _checked(folder, tiles), list(manifest["classes"]), manifest["chip_size"],
                          stats["mean"], stats["std"], [b["description"] for b in manifest["bands"]],
                          {"buffer": manifest.get("buffer"), "chip_pixels": manifest.get("chip_pixels")})
    except (KeyError, TypeError, ValueError) as exc:
        raise ChipFolderError(f"{folder / MANIFEST} lacks {exc}: export the training data again.") from exc


def _esri(folder: Path) -> TileFolder:
    stats = folder / "esri_accumulated_stats.json"
    mode = _json(stats).get("MetaDataMode") if stats.is_file() else None
    pairs = map_pairs(folder)
    if mode not in (None, TILES_MODE) or any(label.suffix.lower() != ".xml" for _, label in pairs):
        raise ChipFolderError(f"{folder} is not Labeled_Tiles training data (metadata mode {mode or 'unknown'}, "
                              "labels " + ", ".join(sorted({p[1].suffix for p in pairs})) + "): for "
                              "PASCAL_VOC_rectangles use Train object detector, for Classified_Tiles Train "
                              "segmentation model.")
    missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise ChipFolderError(f"{len(missing)} file(s) listed in {folder / 'map.txt'} are missing (e.g. "
                              f"{missing[0]}). Copy the complete folder, or export again.")
    classes = _esri_table(folder) or _derived([label for _, label in pairs])
    tiles = [Tile(image, _tile_class(label, classes), None) for image, label in pairs]
    return TileFolder("esri", _checked(folder, tiles), classes, None, None, None, [])


def _tile_class(path: Path, classes: Sequence[dict]) -> int:
    """The class value a tile's VOC file names (all its objects name one class)."""
    names = {n for n in read_voc(path).names if n}
    if len(names) != 1:
        found = ", ".join(sorted(names)) or "none"
        raise ChipFolderError(f"{path} names {len(names)} classes ({found}): a labelled tile has exactly one. Is it "
                              "object detection data? Train it with Train object detector.")
    return class_value(names.pop(), classes, path)


def _checked(folder: Path, tiles: list[Tile]) -> list[Tile]:
    if not tiles:
        raise ChipFolderError(f"{folder} lists no tiles.")
    missing = [str(t.image) for t in tiles if not t.image.is_file()]
    if missing:
        raise ChipFolderError(f"{len(missing)} image(s) of {folder} are missing (e.g. {missing[0]}). Copy the "
                              "complete folder, or export again.")
    return tiles


@dataclass(frozen=True)
class PreparedTiles:
    """The checked tiles of a folder, split, with what the training step needs to know about them."""

    train: list[Tile]
    validation: list[Tile]
    chip_size: int
    band_count: int
    counts: dict[str, list[int]]
    """Chips per split and class (in the order of the class table)."""
    drawn_split: bool


def prepare_tiles(folder: TileFolder, validation_fraction: float, seed: int) -> PreparedTiles:
    """Check, split and count the tiles of ``folder`` (see the module docstring)."""
    tiles = list(folder.tiles)
    drawn = any(t.split is None for t in tiles)
    if drawn:
        if len(tiles) < 2:
            raise TrainingDataError("The folder holds one tile: at least two are needed (training and validation).")
        chosen = drawn_validation(len(tiles), validation_fraction, seed)
        tiles = [Tile(t.image, t.value, VALIDATION if i in chosen else TRAIN, t.window) for i, t in enumerate(tiles)]
    shapes = {}
    for tile in tiles:
        ds = open_raster(tile.image)
        shapes.setdefault((ds.RasterCount, ds.RasterYSize, ds.RasterXSize), tile.image.name)
    if len(shapes) > 1:
        sizes = "; ".join(f"{name}: {b} band(s) of {w}×{h} px" for (b, h, w), name in list(shapes.items())[:2])
        raise ChipFolderError(f"The tiles differ ({sizes}). Every tile of a folder must have the same size and "
                              "bands: export the training data again.")
    (bands, height, width), = shapes
    if height != width:
        raise ChipFolderError(f"The tiles are {width}×{height} px; training needs square tiles.")
    if folder.bands and len(folder.bands) != bands:
        raise ChipFolderError(f"The tiles have {bands} band(s) but the folder's description lists "
                              f"{len(folder.bands)}: export the training data again.")
    train, validation = by_split(tiles)
    if len(train) < 2 or not validation:
        raise TrainingDataError(f"The folder holds {len(train)} training and {len(validation)} validation tile(s); "
                                "at least two training tiles and one validation tile are needed. Export with a "
                                "smaller block size or another validation fraction, or label more features.")
    values = [int(c["value"]) for c in folder.classes]
    counts = {s: [sum(t.value == v for t in group) for v in values]
              for s, group in ((TRAIN, train), (VALIDATION, validation))}
    empty = [f"{c['name']} ({c['value']})" for c, n in zip(folder.classes, counts[TRAIN], strict=True) if not n]
    if empty:
        raise TrainingDataError(f"Class(es) {', '.join(empty)} have no tile in the training split. Export with "
                                "another split (block size, seed) or more features, or leave the class out of the "
                                "class table.")
    return PreparedTiles(train, validation, width, bands, counts, drawn)


class TileDataset(ChipDataset):
    """Map-style dataset of (normalised chip float32 (bands, n, n), class index int64) read per item; ``values``:
    the class values in output-channel order."""

    def __init__(self, tiles: Sequence[Tile], transform: InputTransform, values: Sequence[int], augment: bool,
                 seed: int) -> None:
        super().__init__(tiles, transform, class_lookup(values), augment, seed)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int64]:
        tile = self.chips[index]
        image = np.nan_to_num(self.transform(read_array(tile.image)), nan=0.0, posinf=0.0, neginf=0.0)
        if self.augment:
            turns, flip = augmentation(self.seed, self.epoch, index)
            image = np.rot90(image, turns, (1, 2))
            if flip:
                image = image[:, :, ::-1]
        return np.ascontiguousarray(image), self.lut[tile.value]
