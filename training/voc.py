"""Box annotations on disk: PASCAL VOC XML (one file per image, written and read) and COCO JSON (one file per
split, written).

Coordinates are pixels of the image, origin at the top-left corner of its top-left pixel, ``xmax`` / ``ymax`` the far
edges (as Esri's PASCAL_VOC_rectangles and DeepForest write them; no 1-based shift), written with up to two
decimals (whole numbers without). COCO ``bbox`` is ``[x, y, width, height]`` in the same pixels; ``category_id`` is
the class value.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ChipFolderError


@dataclass(frozen=True)
class VocAnnotation:
    """One VOC file: the image's file name and size (px, 0 when not recorded), its boxes and their class names."""

    filename: str
    width: int
    height: int
    boxes: np.ndarray
    names: list[str]


def number(value: float) -> str:
    """A coordinate with up to two decimals, whole numbers without (``12``, ``12.5``, ``12.25``)."""
    text = f"{round(float(value), 2):.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _child(parent: ET.Element, tag: str, text: object = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = str(text)
    return element


def write_voc(path: Path, image: str, size: tuple[int, int, int], boxes: np.ndarray, names: Sequence[str],
              truncated: Sequence[bool]) -> None:
    """Write one VOC file: ``image`` (its file name, in ``images/``), ``size`` (width, height, bands), the boxes
    (image pixels) with their class names and whether each was clipped at the image's edge."""
    root = ET.Element("annotation")
    _child(root, "folder", "images")
    _child(root, "filename", image)
    _child(_child(root, "source"), "database", "Deep Raster")
    dims = _child(root, "size")
    for tag, value in zip(("width", "height", "depth"), size, strict=True):
        _child(dims, tag, value)
    _child(root, "segmented", 0)
    for box, name, cut in zip(boxes, names, truncated, strict=True):
        item = _child(root, "object")
        _child(item, "name", name)
        _child(item, "pose", "Unspecified")
        _child(item, "truncated", int(bool(cut)))
        _child(item, "difficult", 0)
        bndbox = _child(item, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
            _child(bndbox, tag, number(value))
    ET.indent(root, space="  ")
    path.write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")


def read_voc(path: Path) -> VocAnnotation:
    """One VOC file's image name, size and boxes (difficult boxes included); raises :class:`ChipFolderError`."""
    try:
        root = ET.parse(path).getroot()
        boxes, names = [], []
        for item in root.iter("object"):
            box = item.find("bndbox")
            boxes.append([float(box.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax")])
            names.append((item.findtext("name") or "").strip())
        width = int(float(root.findtext("size/width") or 0))
        height = int(float(root.findtext("size/height") or 0))
    except (ET.ParseError, OSError, AttributeError, TypeError, ValueError) as exc:
        raise ChipFolderError(f"Cannot read the PASCAL VOC file {path} ({exc}).") from exc
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    bad = np.flatnonzero((array[:, 2] <= array[:, 0]) | (array[:, 3] <= array[:, 1]))
    if len(bad):
        raise ChipFolderError(f"{path}: box {int(bad[0]) + 1} has no area (xmax ≤ xmin or ymax ≤ ymin).")
    return VocAnnotation((root.findtext("filename") or "").strip(), width, height, array, names)


def coco_document(records: Sequence[dict], classes: Sequence[dict], chip: int) -> dict:
    """A COCO detection document of chip ``records`` (``image``, ``boxes`` (K, 4) chip pixels, ``values``)."""
    images, annotations = [], []
    for image_id, record in enumerate(records, 1):
        images.append({"id": image_id, "file_name": record["image"], "width": chip, "height": chip})
        for box, value in zip(record["boxes"], record["values"], strict=True):
            x1, y1, x2, y2 = (round(float(v), 2) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(value),
                                "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                                "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0})
    return {"info": {"description": "Deep Raster object training chips"}, "images": images,
            "annotations": annotations,
            "categories": [{"id": int(c["value"]), "name": str(c["name"]), "supercategory": "object"}
                           for c in classes]}


def write_coco(path: Path, records: Sequence[dict], classes: Sequence[dict], chip: int) -> None:
    """Write :func:`coco_document` as JSON."""
    path.write_text(json.dumps(coco_document(records, classes, chip)), encoding="utf-8")
