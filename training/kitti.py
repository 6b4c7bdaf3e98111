"""Box annotations as KITTI label files (Esri's *KITTI_rectangles* layout): one text file per image, one line per box.

A line has KITTI's 15 fields separated by spaces: class name, truncated (0–1), occluded (0), alpha (0), the box
``left top right bottom`` in image pixels (origin at the top-left corner of the top-left pixel, right / bottom the
far edges, as in :mod:`training.voc`), then the 3-D dimensions, location and rotation, all 0 for imagery. Class names
may not hold spaces (the fields are space-separated): they are written with underscores and read back as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ChipFolderError
from .voc import number

FIELDS = 15
"""Fields of a KITTI label line: type, truncated, occluded, alpha, 4 box, 3 dimensions, 3 location, rotation_y."""


def kitti_name(name: str) -> str:
    """A class name as one KITTI field (spaces become underscores)."""
    return "_".join(str(name).split()) or "_"


def write_kitti(path: Path, boxes: np.ndarray, names: Sequence[str], truncated: Sequence[bool]) -> None:
    """Write one KITTI label file: the boxes (image pixels, ``x1 y1 x2 y2``) with their class names and whether each
    was clipped at the image's edge."""
    lines = []
    for box, name, cut in zip(boxes, names, truncated, strict=True):
        coords = " ".join(number(v) for v in box)
        lines.append(f"{kitti_name(name)} {1 if cut else 0} 0 0 {coords} 0 0 0 0 0 0 0")
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def read_kitti(path: Path) -> tuple[np.ndarray, list[str]]:
    """The boxes ``(K, 4)`` (image pixels) and class names of a KITTI label file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ChipFolderError(f"{path}: the KITTI label file cannot be read ({exc}).") from exc
    boxes, names = [], []
    for number_, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 8:
            raise ChipFolderError(f"{path}, line {number_}: a KITTI label line needs the class name and at least "
                                  f"7 numbers (truncated, occluded, alpha, left, top, right, bottom); found "
                                  f"{len(fields)} fields.")
        try:
            box = [float(v) for v in fields[4:8]]
        except ValueError as exc:
            raise ChipFolderError(f"{path}, line {number_}: the box is not four numbers ({exc}).") from exc
        if not (box[2] > box[0] and box[3] > box[1]):
            raise ChipFolderError(f"{path}, line {number_}: the box {box} has no area (right ≤ left or bottom ≤ "
                                  "top).")
        boxes.append(box)
        names.append(fields[0])
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), names
