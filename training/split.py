"""The chip grid and the validation split by spatial blocks.

Blocks are squares of ``block_size`` map units laid from the region's top-left corner. Every block that holds a
chip's pixel is drawn (seeded) as training or validation, ``fraction`` of them validation. A chip is kept only when
every block within one chip of it (its own blocks and those its window grown by one chip on each side touches)
has the same split: so no chip lies in both sets, and a gap of at least one chip separates the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..tiling.window import Window
from .errors import TrainingDataError

TRAIN = "train"
VALIDATION = "validation"


@dataclass(frozen=True)
class SplitPlan:
    """Chips kept with their split, the block of each split, and how many chips the gap dropped."""

    chips: list[tuple[Window, str]]
    blocks: dict[tuple[int, int], str]
    """(block column, block row) → split."""
    block_pixels: tuple[float, float]
    """Block size in pixels (x, y)."""
    dropped_by_gap: int


def chip_windows(region: Window, chip: int, stride: int) -> list[Window]:
    """Full chips of ``chip`` px every ``stride`` px inside ``region``, row by row."""
    if chip > region.width or chip > region.height:
        raise TrainingDataError(f"The chip size ({chip} px) is larger than the raster or extent ({region.width} × "
                                f"{region.height} px). Choose a chip size of at most {min(region.width, region.height)}"
                                " px, or a larger extent.")
    cols = range(region.col_off, region.col_end - chip + 1, stride)
    rows = range(region.row_off, region.row_end - chip + 1, stride)
    return [Window(c, r, chip, chip) for r in rows for c in cols]


def _blocks(region: Window, window: Window, size: tuple[float, float], grow: int) -> set[tuple[int, int]]:
    """Blocks touched by ``window`` grown by ``grow`` px on every side (blocks outside the region left out)."""
    c0 = max(window.col_off - grow, region.col_off) - region.col_off
    c1 = min(window.col_end + grow, region.col_end) - 1 - region.col_off
    r0 = max(window.row_off - grow, region.row_off) - region.row_off
    r1 = min(window.row_end + grow, region.row_end) - 1 - region.row_off
    return {(bx, by) for bx in range(math.floor(c0 / size[0]), math.floor(c1 / size[0]) + 1)
            for by in range(math.floor(r0 / size[1]), math.floor(r1 / size[1]) + 1)}


def split_by_blocks(windows: list[Window], region: Window, pixel_size: tuple[float, float], block_size: float,
                    fraction: float, seed: int, gap: int | None = None) -> SplitPlan:
    """Assign the chips to training and validation by blocks of ``block_size`` map units (``pixel_size`` in map
    units per pixel, x and y); ``fraction`` of the blocks (at least one) go to validation (see the module). ``gap``:
    the least distance (px) between chips of the two splits (None: one chip, the first window's width)."""
    if not 0.0 < fraction < 1.0:
        raise TrainingDataError(f"The validation fraction must be between 0 and 1 (got {fraction}).")
    if len(windows) < 2:
        raise TrainingDataError(f"Only {len(windows)} chip fits the raster: too few chips for a validation split. "
                                "Choose a smaller chip size or stride, or a larger extent.")
    size = (block_size / abs(pixel_size[0]), block_size / abs(pixel_size[1]))
    chip = windows[0].width if gap is None else gap
    if min(size) < 1:
        raise TrainingDataError(f"The block size ({block_size:g} map units) is smaller than a pixel. Give it in the "
                                "raster's map units (metres or degrees).")
    used = sorted({b for w in windows for b in _blocks(region, w, size, 0)})
    if len(used) < 2:
        raise TrainingDataError(
            f"All {len(windows)} chips lie in one block of {block_size:g} map units: too few blocks for a validation "
            f"split. Choose a smaller block size (at most {min(region.width * abs(pixel_size[0]), region.height * abs(pixel_size[1])) / 3:g} "  # noqa: E501
            "map units for this raster), or a larger extent.")
    rng = np.random.default_rng(seed)
    n_val = min(len(used) - 1, max(1, round(fraction * len(used))))
    chosen = set(rng.permutation(len(used))[:n_val].tolist())
    blocks = {b: VALIDATION if i in chosen else TRAIN for i, b in enumerate(used)}
    chips, dropped = [], 0
    for window in windows:
        splits = {blocks[b] for b in _blocks(region, window, size, chip) if b in blocks}
        if len(splits) == 1:
            chips.append((window, splits.pop()))
        else:
            dropped += 1
    return SplitPlan(chips, blocks, size, dropped)
