"""Reading object training data back, for training a detector: images with their boxes, in three layouts.

- Ours (``manifest.json`` of format ``deepraster-object-chips``, :mod:`training.object_layout`): chips with their
  split, window and VOC file, the class table and the band statistics of the training chips.
- Esri's *PASCAL_VOC_rectangles* or *KITTI_rectangles* (ArcGIS Pro's export, or ours read as Esri's): ``map.txt``
  (image and label path per line: VOC .xml or KITTI .txt) and ``esri_model_definition.emd`` (``Classes``). No split:
  the training step draws one.
- A plain PASCAL VOC folder (DeepForest's sample data, labelImg, CVAT): ``*.xml`` files in the folder or in
  ``labels/`` / ``Annotations/``, each naming its image (``<filename>``) in ``images/``, ``JPEGImages/`` or beside
  it; images of any size. Classes from the ``<name>``s (sorted names → 0, 1, …; numbers keep their value). No split.

A VOC ``<name>`` (KITTI: the first field) is matched with the class table by name (case-insensitive), else by value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .chips import IMAGE_SUFFIXES, _esri_classes, _json, map_pairs
from .errors import ChipFolderError
from .kitti import read_kitti
from .labels import class_table, normalise_value
from .object_layout import OBJECT_FORMAT, OBJECT_FORMAT_VERSION
from .voc import VocAnnotation, read_voc

MANIFEST = "manifest.json"
ANNOTATION_FOLDERS = ("labels", "Annotations", "")
IMAGE_FOLDERS = ("images", "JPEGImages", "")


@dataclass(frozen=True)
class ObjectImage:
    """One image (a chip, or a larger image) with its boxes: ``boxes`` (K, 4) image pixels, ``values`` (K,) class
    values, ``split`` ("train", "validation", or None when not assigned), the chip's pixel window in the source
    raster (None when not recorded)."""

    image: Path
    boxes: np.ndarray
    values: np.ndarray
    split: str | None
    window: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class ObjectFolder:
    """Object training data as the training step sees it."""

    layout: str
    """``"deepraster"``, ``"esri"`` or ``"voc"``."""
    images: list[ObjectImage]
    classes: list[dict]
    chip_size: int | None
    mean: list[float] | None
    std: list[float] | None
    bands: list[str]


def read_object_folder(folder: str | Path) -> ObjectFolder:
    """The images, boxes, class table and statistics of ``folder`` (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ChipFolderError(f"{folder} is not a folder. Choose the folder that Export object training data wrote, "
                              "or a PASCAL VOC folder.")
    if (folder / MANIFEST).is_file():
        return _ours(folder)
    if (folder / "map.txt").is_file():
        return _esri(folder)
    xmls = [p for sub in ANNOTATION_FOLDERS for p in sorted((folder / sub).glob("*.xml"))]
    if xmls:
        return _plain(folder, xmls)
    raise ChipFolderError(f"{folder} holds neither {MANIFEST} (Export object training data), map.txt (Esri's "
                          "PASCAL_VOC_rectangles) nor PASCAL VOC .xml files. Choose an object training data folder.")


def class_value(name: str, classes: Sequence[dict], where: Path) -> int:
    """The class value a VOC ``<name>`` stands for: by name (case-insensitive), else a number of the table."""
    for c in classes:
        if str(c["name"]).casefold() == name.casefold():
            return int(c["value"])
    number = normalise_value(name)
    if isinstance(number, int) and number in {int(c["value"]) for c in classes}:
        return number
    known = ", ".join(f"{c['value']} {c['name']}" for c in classes)
    raise ChipFolderError(f"{where}: class {name!r} is not in the class table ({known}).")


def read_labels(path: Path) -> VocAnnotation:
    """A label file's boxes and class names: KITTI for ``.txt`` (no image name or size), else PASCAL VOC."""
    if path.suffix.lower() == ".txt":
        boxes, names = read_kitti(path)
        return VocAnnotation("", 0, 0, boxes, names)
    return read_voc(path)


def _image(folder: Path, voc_path: Path, split: str | None, classes: Sequence[dict], image: Path | None = None,
           window: tuple[int, int, int, int] | None = None) -> ObjectImage:
    """One label file's boxes (PASCAL VOC .xml or KITTI .txt) as class values; its image ``image``, else the one
    the VOC ``<filename>`` names."""
    voc = read_labels(voc_path)
    if image is None:
        name = Path(voc.filename).name
        candidates = [folder / sub / name for sub in IMAGE_FOLDERS] + [voc_path.with_name(name)]
        candidates += [voc_path.with_suffix(s) for s in IMAGE_SUFFIXES]
        image = next((p for p in candidates if p.is_file()), None)
        if image is None:
            raise ChipFolderError(f"The image {name or voc_path.stem} of {voc_path} is not in images/, JPEGImages/ "
                                  "or beside the .xml file.")
    values = np.asarray([class_value(n, classes, voc_path) for n in voc.names], dtype=np.int64)
    return ObjectImage(image, voc.boxes, values, split, window)


def _ours(folder: Path) -> ObjectFolder:
    manifest = _json(folder / MANIFEST)
    if manifest.get("format") != OBJECT_FORMAT:
        raise ChipFolderError(f"{folder / MANIFEST} is not an object training data manifest (it is "
                              f"{manifest.get('format')!r}): for segmentation chips use Train segmentation model.")
    if not isinstance(manifest.get("format_version"), int) or manifest["format_version"] > OBJECT_FORMAT_VERSION:
        raise ChipFolderError(f"{folder / MANIFEST} has format version {manifest.get('format_version')!r}; this "
                              f"plugin reads up to {OBJECT_FORMAT_VERSION}. Update the plugin.")
    try:
        classes = list(manifest["classes"])
        images = [_image(folder, folder / c["label"], c["split"], classes, folder / c["image"],
                         tuple(c["window"]) if c.get("window") else None) for c in manifest["chips"]]
        stats = manifest["statistics"]
        return ObjectFolder("deepraster", _checked(folder, images), classes, manifest["chip_size"], stats["mean"],
                            stats["std"], [b["description"] for b in manifest["bands"]])
    except (KeyError, TypeError) as exc:
        raise ChipFolderError(f"{folder / MANIFEST} lacks {exc}: export the training data again.") from exc


def _esri_table(folder: Path) -> list[dict] | None:
    """The class table of an Esri ``.emd`` beside the data (None without one)."""
    path = folder / "esri_model_definition.emd"
    return _esri_classes(_json(path), path) if path.is_file() else None


def _esri(folder: Path) -> ObjectFolder:
    pairs = map_pairs(folder)
    if any(label.suffix.lower() not in (".xml", ".txt") for _, label in pairs):
        raise ChipFolderError(f"{folder} is neither PASCAL_VOC_rectangles nor KITTI_rectangles training data (its "
                              "map.txt names label files that are not .xml or .txt): for Classified_Tiles use Train "
                              "segmentation model.")
    classes = _esri_table(folder) or _derived([label for _, label in pairs])
    missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise ChipFolderError(f"{len(missing)} file(s) listed in {folder / 'map.txt'} are missing (e.g. "
                              f"{missing[0]}). Copy the complete folder, or export again.")
    images = [_image(folder, label, None, classes, image) for image, label in pairs]
    return ObjectFolder("esri", _checked(folder, images), classes, None, None, None, [])


def _derived(xmls: Sequence[Path]) -> list[dict]:
    """A class table from the ``<name>``s of VOC files."""
    names = [normalise_value(n) for path in xmls if path.is_file() for n in read_labels(path).names]
    return class_table([n for n in names if n is not None], None, False)


def _plain(folder: Path, xmls: list[Path]) -> ObjectFolder:
    classes = _esri_table(folder) or _derived(xmls)
    images = [_image(folder, path, None, classes) for path in xmls]
    return ObjectFolder("voc", _checked(folder, images), classes, None, None, None, [])


def _checked(folder: Path, images: list[ObjectImage]) -> list[ObjectImage]:
    if not images:
        raise ChipFolderError(f"{folder} lists no images.")
    missing = [str(i.image) for i in images if not i.image.is_file()]
    if missing:
        raise ChipFolderError(f"{len(missing)} image(s) of {folder} are missing (e.g. {missing[0]}). Copy the "
                              "complete folder, or export again.")
    return images
