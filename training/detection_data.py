"""Object training data as the detector's training loop sees it: square samples with boxes, split, read per item,
augmented, batched ahead.

- :func:`prepare_samples` turns every image of an object folder (:mod:`training.object_chips`) into samples of
  ``tile`` × ``tile`` px: a chip of that size is one sample; a larger image (a plain VOC folder) is cut into a grid
  of tiles (the last row and column moved inside the image), each keeping the boxes of which at least
  ``min_visible`` lies inside, clipped (:func:`training.object_boxes.clip_boxes`); a smaller one is padded with 0.
  A folder without a split gets one drawn at random by sample (seeded).
- :class:`ObjectDataset` reads one sample per item with GDAL (nothing cached), normalises it
  (:class:`training.dataset.InputTransform`) and, for training, applies a flip and a 90° rotation drawn from
  ``(seed, epoch, sample)`` to the image and its boxes; :func:`object_batches` batches items one ahead in a thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from osgeo import gdal

from ..tiling.grid import axis_starts
from ..tiling.window import Window
from .dataset import InputTransform, augmentation, by_split, drawn_validation, open_raster, read_ahead
from .errors import ChipFolderError, TrainingDataError
from .object_boxes import clip_boxes
from .object_chips import ObjectFolder
from .split import TRAIN, VALIDATION

DEFAULT_TILE = 512
"""Samples cut from a folder of images of different sizes (px), unless the request gives a tile size."""


@dataclass(frozen=True)
class Sample:
    """One training or validation sample: a ``window`` of ``image`` (image pixels; may reach past a small image,
    which is padded), its boxes in window pixels and their class indexes (0 … classes − 1)."""

    image: str
    window: Window
    boxes: np.ndarray
    classes: np.ndarray
    split: str
    source_window: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class PreparedSamples:
    """The samples of a folder, split, with what the training step needs to know about them."""

    train: list[Sample]
    validation: list[Sample]
    tile: int
    band_count: int
    box_counts: dict[str, list[int]]
    """Boxes per split and class (in the order of the class table)."""
    drawn_split: bool
    largest_box: float
    """The longest box side in the training samples, px."""


def _size(path) -> tuple[int, int, int]:
    ds = open_raster(path, "image")
    return ds.RasterCount, ds.RasterXSize, ds.RasterYSize


def _windows(width: int, height: int, tile: int) -> list[Window]:
    """Tiles of ``tile`` px covering a ``width`` × ``height`` image (one padded tile when it is smaller)."""
    cols = axis_starts(0, width, tile, tile) if width > tile else [0]
    rows = axis_starts(0, height, tile, tile) if height > tile else [0]
    return [Window(c, r, tile, tile) for r in rows for c in cols]


def prepare_samples(folder: ObjectFolder, tile: int | None, fraction: float, seed: int,
                    min_visible: float = 0.5) -> PreparedSamples:
    """Check, cut, split and count the images of ``folder`` (see the module docstring)."""
    shapes = [_size(i.image) for i in folder.images]
    bands = {s[0] for s in shapes}
    if len(bands) != 1:
        raise ChipFolderError(f"The images have different band counts ({sorted(bands)}): every image of a folder "
                              "must have the same bands.")
    if tile is None:
        sizes = {(w, h) for _, w, h in shapes}
        only = sizes.pop() if len(sizes) == 1 else None
        tile = folder.chip_size or (only[0] if only and only[0] == only[1] else DEFAULT_TILE)
    if tile < 32:
        raise TrainingDataError(f"Tiles of {tile} px are too small for a detector: use at least 32 px.")
    lookup = {int(c["value"]): i for i, c in enumerate(folder.classes)}
    samples, drawn = [], any(i.split is None for i in folder.images)
    for item, (_, width, height) in zip(folder.images, shapes, strict=True):
        for window in _windows(width, height, tile):
            keep, boxes, _ = clip_boxes(item.boxes, window, min_visible)
            samples.append(Sample(str(item.image), window, boxes.astype(np.float32),
                                  np.asarray([lookup[int(v)] for v in item.values[keep]], np.int64),
                                  item.split or "", item.window))
    if drawn:
        chosen = drawn_validation(len(samples), fraction, seed)
        samples = [Sample(s.image, s.window, s.boxes, s.classes, VALIDATION if k in chosen else TRAIN,
                          s.source_window) for k, s in enumerate(samples)]
    train, validation = by_split(samples)
    if len(train) < 2 or not validation:
        raise TrainingDataError(f"The folder gives {len(train)} training and {len(validation)} validation sample(s); "
                                "at least two training and one validation sample are needed. Export with a smaller "
                                "chip or block size, or another validation fraction.")
    counts = {split: np.bincount(np.concatenate([s.classes for s in group] + [np.zeros(0, np.int64)]),
                                 minlength=len(folder.classes)).tolist()
              for split, group in ((TRAIN, train), (VALIDATION, validation))}
    empty = [f"{c['name']} ({c['value']})" for c, n in zip(folder.classes, counts[TRAIN], strict=True) if not n]
    if empty:
        raise TrainingDataError(f"Class(es) {', '.join(empty)} have no box in the training samples. Export with "
                                "another split (block size, seed) or more boxes, or leave the class out.")
    sides = [float((s.boxes[:, 2:] - s.boxes[:, :2]).max()) for s in train if len(s.boxes)]
    return PreparedSamples(train, validation, tile, bands.pop(), counts, drawn, max(sides, default=0.0))


def read_window(sample: Sample) -> np.ndarray:
    """The sample's pixels ``(bands, tile, tile)``; what lies outside the image is 0."""
    ds = gdal.Open(sample.image)
    w = sample.window
    width, height = min(w.width, ds.RasterXSize - w.col_off), min(w.height, ds.RasterYSize - w.row_off)
    array = ds.ReadAsArray(w.col_off, w.row_off, width, height)
    array = array[None] if array.ndim == 2 else array
    if (width, height) == (w.width, w.height):
        return array
    out = np.zeros((array.shape[0], w.height, w.width), dtype=array.dtype)
    out[:, :height, :width] = array
    return out


def turn_boxes(boxes: np.ndarray, size: int, turns: int, flip: bool) -> np.ndarray:
    """Boxes of a ``size`` px square image after ``np.rot90(image, turns, (1, 2))`` and then, with ``flip``, a
    left–right flip."""
    out = boxes.copy()
    for _ in range(turns % 4):  # a quarter turn anticlockwise: (x, y) → (y, size − x)
        out = np.stack([out[:, 1], size - out[:, 2], out[:, 3], size - out[:, 0]], axis=1)
    if flip:
        out = np.stack([size - out[:, 2], out[:, 1], size - out[:, 0], out[:, 3]], axis=1)
    return out.astype(np.float32)


class ObjectDataset:
    """Map-style dataset of (normalised image float32 (bands, tile, tile), boxes float32 (K, 4), class indexes
    int64 (K,)) read per item."""

    def __init__(self, samples: Sequence[Sample], transform: InputTransform, augment: bool, seed: int) -> None:
        self.samples, self.transform, self.augment, self.seed = list(samples), transform, augment, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sample = self.samples[index]
        image, boxes = self.transform(read_window(sample)), sample.boxes
        if self.augment:
            turns, flip = augmentation(self.seed, self.epoch, index)
            image = np.rot90(image, turns, (1, 2))
            image = image[:, :, ::-1] if flip else image
            boxes = turn_boxes(boxes, sample.window.width, int(turns), bool(flip))
        return np.ascontiguousarray(image), boxes, sample.classes


def _collate(items: list) -> tuple:
    import torch

    images = torch.from_numpy(np.stack([i[0] for i in items]))
    targets = [{"boxes": torch.from_numpy(np.ascontiguousarray(b)).reshape(-1, 4),
                "classes": torch.from_numpy(np.ascontiguousarray(c))} for _, b, c in items]
    return images, targets


def object_batches(dataset: ObjectDataset, order: Sequence[int], batch_size: int) -> Iterator:
    """(images (B, bands, tile, tile), targets: per image ``boxes`` and ``classes``) in ``order``, read one batch
    ahead in a background thread."""
    from torch.utils.data import DataLoader

    return read_ahead(DataLoader(dataset, batch_size=batch_size, sampler=list(order), num_workers=0,
                                 collate_fn=_collate))
