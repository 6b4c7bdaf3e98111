"""Chips as the training loop sees them: checked once, split, read from disk per item, augmented, batched ahead.

- :func:`prepare_chips` checks that every chip has the same size and band count, splits an Esri folder (which has
  none) by chip at random with a seed, and counts the labelled pixels per class and split (the manifest's counts
  when our export wrote them; otherwise read label chip by label chip). A class without pixels in either split is
  refused by name.
- :class:`ChipDataset` reads one chip per item with GDAL (nothing is cached: memory does not grow with the number of
  chips), maps class values to output channels (other values, and the ignore value, become :data:`IGNORE_INDEX`),
  normalises, and on training chips draws a flip and a 90° rotation from ``(seed, epoch, chip)`` — so the data a run
  sees depend only on the seed and the epoch, and a resumed run sees what an uninterrupted one did.
- :func:`batches` is a ``torch.utils.data.DataLoader`` (no worker processes) whose batches are read one ahead in a
  background thread (GDAL releases the GIL while it decodes).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from osgeo import gdal

from .chips import Chip, ChipFolder
from .errors import ChipFolderError, TrainingDataError
from .split import TRAIN, VALIDATION

IGNORE_INDEX = -100
"""Label of pixels no loss or metric counts (PyTorch's ``CrossEntropyLoss`` default)."""


@dataclass(frozen=True)
class PreparedChips:
    """The checked chips of a folder, split, with what the training step needs to know about them."""

    train: list[Chip]
    validation: list[Chip]
    chip_size: int
    band_count: int
    counts: dict[str, list[int]]
    """Labelled pixels per split and class (in the order of the class table)."""
    drawn_split: bool
    """True when the folder had no split and one was drawn at random by chip."""


@dataclass(frozen=True)
class InputTransform:
    """Raster values → network input: chip bands ``bands`` (0-based, model order), then
    ``((x × scale + offset) − mean) / std`` per band (mean and std in model units)."""

    bands: tuple[int, ...]
    scale: float
    offset: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        x = image[list(self.bands)].astype(np.float32) * np.float32(self.scale) + np.float32(self.offset)
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.maximum(np.asarray(self.std, np.float32), 1e-12)[:, None, None]
        return (x - mean) / std


def open_raster(path, what: str = "chip") -> gdal.Dataset:
    """The GDAL dataset of ``path``; refused by naming it (``what``: "chip", "image") when GDAL cannot read it."""
    ds = gdal.Open(str(path))
    if ds is None:
        raise ChipFolderError(f"Cannot read the {what} {path}: {gdal.GetLastErrorMsg() or 'not a raster'}.")
    return ds


def read_array(path) -> np.ndarray:
    """All bands of a chip file as (bands, rows, cols)."""
    array = open_raster(path).ReadAsArray()
    return array[None] if array.ndim == 2 else array


def class_lookup(values: Sequence[int]) -> np.ndarray:
    """A 256-entry table: class value → output channel; every other value → :data:`IGNORE_INDEX`."""
    lut = np.full(256, IGNORE_INDEX, np.int64)
    lut[list(values)] = np.arange(len(values))
    return lut


def _shape(path) -> tuple[int, int, int]:
    ds = open_raster(path)
    return ds.RasterCount, ds.RasterYSize, ds.RasterXSize


def drawn_validation(n: int, fraction: float, seed: int) -> set[int]:
    """The items (of ``n``, n ≥ 2) drawn at random with ``seed`` as validation: ``fraction`` of them rounded, at
    least one, and at least one left for training."""
    order = np.random.default_rng(seed).permutation(n)
    return set(order[:min(max(1, round(fraction * n)), n - 1)].tolist())


def by_split(items: Sequence) -> tuple[list, list]:
    """The training and the validation items (by their ``split``)."""
    return [i for i in items if i.split == TRAIN], [i for i in items if i.split == VALIDATION]


def augmentation(seed: int, epoch: int, index: int) -> tuple[np.int64, np.int64]:
    """The quarter turns (0–3) and the flip (0 or 1) of training item ``index`` in ``epoch`` (drawn from the three)."""
    turns, flip = np.random.default_rng((seed, epoch, index)).integers(0, [4, 2])
    return turns, flip


def _draw_split(chips: list[Chip], fraction: float, seed: int) -> list[Chip]:
    chosen = drawn_validation(len(chips), fraction, seed)
    return [Chip(c.image, c.label, VALIDATION if i in chosen else TRAIN, c.window) for i, c in enumerate(chips)]


def _check_shapes(chips: list[Chip]) -> tuple[int, int]:
    first = _shape(chips[0].image)
    for chip in chips:
        image, label = _shape(chip.image), _shape(chip.label)
        if image != first:
            raise ChipFolderError(
                f"The chips differ: {chip.image.name} has {image[0]} band(s) of {image[2]}×{image[1]} px, "
                f"{chips[0].image.name} {first[0]} of {first[2]}×{first[1]} px. Every chip of a folder must have the "
                "same size and bands: export the training data again.")
        if label != (1, image[1], image[2]):
            raise ChipFolderError(f"The label chip {chip.label.name} ({label[0]} band(s), {label[2]}×{label[1]} px) "
                                  f"does not fit its image chip ({image[2]}×{image[1]} px): export again.")
    if first[1] != first[2]:
        raise ChipFolderError(f"The chips are {first[2]}×{first[1]} px; training needs square chips.")
    return first[0], first[1]


def prepare_chips(folder: ChipFolder, validation_fraction: float, seed: int) -> PreparedChips:
    """Check, split and count the chips of ``folder`` (see the module docstring)."""
    chips = list(folder.chips)
    drawn = any(c.split is None for c in chips)
    if drawn:
        if len(chips) < 2:
            raise TrainingDataError("The folder holds one chip: at least two are needed (training and validation).")
        chips = _draw_split(chips, validation_fraction, seed)
    bands, size = _check_shapes(chips)
    if folder.chip_size and folder.chip_size != size:
        raise ChipFolderError(f"The chips are {size} px but the folder's description says {folder.chip_size} px.")
    if folder.bands and len(folder.bands) != bands:
        raise ChipFolderError(f"The chips have {bands} band(s) but the folder's description lists "
                              f"{len(folder.bands)}: export the training data again.")
    train, validation = by_split(chips)
    if len(train) < 2 or not validation:
        raise TrainingDataError(f"The folder holds {len(train)} training and {len(validation)} validation chip(s); "
                                "at least two training chips and one validation chip are needed. Export with a "
                                "smaller chip or block size, or another validation fraction.")
    values = [int(c["value"]) for c in folder.classes]
    if folder.pixel_counts:
        counts = {s: [int(folder.pixel_counts.get(s, {}).get(str(v), 0)) for v in values]
                  for s in (TRAIN, VALIDATION)}
    else:
        counts = {s: _count_labels(group, values, folder.ignore_value)
                  for s, group in ((TRAIN, train), (VALIDATION, validation))}
    for split, what in ((TRAIN, "training"), (VALIDATION, "validation")):
        empty = [f"{c['name']} ({c['value']})" for c, n in zip(folder.classes, counts[split], strict=True) if not n]
        if empty:
            raise TrainingDataError(f"Class(es) {', '.join(empty)} have no pixel in the {what} chips. Export with "
                                    "another split (block size, seed) or more labels, or leave the class out of the "
                                    "class table.")
    return PreparedChips(train, validation, size, bands, counts, drawn)


def _count_labels(chips: list[Chip], values: list[int], ignore: int | None) -> list[int]:
    total = np.zeros(256, np.int64)
    for chip in chips:
        total += np.bincount(read_array(chip.label).ravel().astype(np.int64), minlength=256)[:256]
    if ignore is not None:
        total[ignore] = 0
    return [int(total[v]) for v in values]


class ChipDataset:
    """Map-style dataset of (normalised image float32 (bands, n, n), channel labels int64 (n, n)) read per item."""

    def __init__(self, chips: Sequence[Chip], transform: InputTransform, lut: np.ndarray, augment: bool,
                 seed: int) -> None:
        self.chips = list(chips)
        self.transform = transform
        self.lut = lut
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        chip = self.chips[index]
        image = self.transform(read_array(chip.image))
        label = self.lut[read_array(chip.label)[0]]
        if self.augment:
            turns, flip = augmentation(self.seed, self.epoch, index)
            image, label = np.rot90(image, turns, (1, 2)), np.rot90(label, turns)
            if flip:
                image, label = image[:, :, ::-1], label[:, ::-1]
        return np.ascontiguousarray(image), np.ascontiguousarray(label)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order training chips are seen in one epoch (the same for every run with this seed)."""
    return np.random.default_rng((seed, epoch, 1)).permutation(n).tolist()


def batches(dataset: ChipDataset, order: Sequence[int], batch_size: int) -> Iterator:
    """(images, labels) tensor batches in ``order``, read one batch ahead in a background thread."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, sampler=list(order), num_workers=0)
    return read_ahead(loader)


def read_ahead(items: Iterable, depth: int = 2) -> Iterator:
    """The items of ``items``, produced ``depth`` ahead in a daemon thread; its errors are raised here."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    end = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                slots.put(item)
            slots.put(end)
        except BaseException as exc:  # noqa: BLE001 (handed to the consumer, which raises it)
            slots.put(exc)

    thread = threading.Thread(target=produce, daemon=True, name="deepraster-chips")
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                slots.get(timeout=0.05)


def chip_statistics(chips: Sequence[Chip]) -> tuple[list[float], list[float]]:
    """Per-band mean and std (raster units) of every pixel of ``chips``, chip by chip (sums shifted by the first
    chip's mean, so the variance keeps its precision)."""
    n, shift, s1, s2 = 0, None, 0.0, 0.0
    for chip in chips:
        pixels = read_array(chip.image).astype(np.float64)
        pixels = pixels.reshape(pixels.shape[0], -1)
        if shift is None:
            shift = pixels.mean(axis=1)
        centred = pixels - shift[:, None]
        n += pixels.shape[1]
        s1 = s1 + centred.sum(axis=1)
        s2 = s2 + (centred ** 2).sum(axis=1)
    mean = s1 / n
    return (shift + mean).tolist(), np.sqrt(np.maximum(s2 / n - mean * mean, 0.0)).tolist()
