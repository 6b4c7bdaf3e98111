"""From–to change between two class rasters: pixel pairs counted, a compact code table, the pixel function.

Codes of the change raster: 0 = unchanged (same class on both dates), 1, 2, … = one code per from–to pair that
occurs with ``from ≠ to``, in the order of (from, to). Nodata where either date is nodata. The table of every pair
(unchanged ones too) gives pixels, area in map units² and hectares (when the CRS is in metres).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..tiling.outputs import ClassInfo
from ..tiling.pixelwise import PixelFunction
from .palette import NO_MATCH_RGB, category_colours

UNCHANGED = 0
"""Code of the pixels whose class is the same on both dates."""
ARROW = " → "
SMALL = 256
"""Class values 0–255 on both dates are counted with one bincount of 65 536 bins."""


class PairCounter:
    """Counts of (from, to) class pairs accumulated window by window (memory: one entry per pair present)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[int, int], int] = {}

    def add(self, pixels: np.ndarray) -> None:
        """Count the pairs of ``pixels`` ``(n, 2)`` (from, to) class values."""
        a, b = pixels[:, 0].astype(np.int64), pixels[:, 1].astype(np.int64)
        if len(a) and min(a.min(), b.min()) >= 0 and max(a.max(), b.max()) < SMALL:  # the usual case: bincount
            n = np.bincount(a * SMALL + b, minlength=SMALL * SMALL)
            keys = np.flatnonzero(n)
            pairs, counts = [divmod(int(k), SMALL) for k in keys], n[keys]
        else:  # any 32-bit class values: one 64-bit key per pixel
            key = ((a + 2**31).astype(np.uint64) << np.uint64(32)) | (b + 2**31).astype(np.uint64)
            keys, counts = np.unique(key, return_counts=True)
            pairs = [(int(k) // 2**32 - 2**31, int(k) % 2**32 - 2**31) for k in keys.tolist()]
        for pair, k in zip(pairs, counts.tolist(), strict=True):
            self.counts[pair] = self.counts.get(pair, 0) + k


@dataclass(frozen=True)
class PairRow:
    """One from–to pair of the area table: its code in the change raster, names, pixels and areas."""

    code: int
    from_value: int
    to_value: int
    from_name: str
    to_name: str
    pixels: int
    area: float  # map units²
    hectares: float | None  # None when the map unit is not the metre

    @property
    def name(self) -> str:
        return "no change" if self.code == UNCHANGED else f"{self.from_name}{ARROW}{self.to_name}"


@dataclass(frozen=True)
class ChangeTable:
    """Every from–to pair with its code and area, and the classes (styles) of the change raster."""

    rows: tuple[PairRow, ...]
    pixel_area: float  # map units² per pixel
    metres: bool

    @property
    def changed_codes(self) -> dict[tuple[int, int], int]:
        """(from, to) → code, for the changed pairs."""
        return {(r.from_value, r.to_value): r.code for r in self.rows if r.code != UNCHANGED}

    def classes(self) -> tuple[ClassInfo, ...]:
        """Value, name "from → to" and colour of every code of the change raster ("no change" light grey)."""
        changed = [r for r in self.rows if r.code != UNCHANGED]
        colours = category_colours(len(changed))
        return (ClassInfo(UNCHANGED, "no change", NO_MATCH_RGB),
                *(ClassInfo(r.code, r.name, colours[i]) for i, r in enumerate(changed)))

    def totals(self) -> tuple[int, int]:
        """(changed pixels, compared pixels)."""
        changed = sum(r.pixels for r in self.rows if r.code != UNCHANGED)
        return changed, sum(r.pixels for r in self.rows)


def change_table(counts: Mapping[tuple[int, int], int], names_from: Mapping[int, str], names_to: Mapping[int, str],
                 pixel_area: float, metres: bool) -> ChangeTable:
    """The table of ``counts`` (pairs sorted by from, then to; changed pairs numbered 1, 2, …). Class names come
    from each raster's category names, else the class value."""
    rows, code = [], 0
    for (a, b), n in sorted(counts.items()):
        if a != b:
            code += 1
        area = n * pixel_area
        rows.append(PairRow(code if a != b else UNCHANGED, a, b, names_from.get(a, str(a)), names_to.get(b, str(b)),
                            n, area, area / 10000.0 if metres else None))
    return ChangeTable(tuple(rows), pixel_area, metres)


def change_codes(table: ChangeTable, nodata: int) -> PixelFunction:
    """Pixel function ``(n, 2)`` (from, to) → ``(n, 1)`` change codes; a pair missing from the table (never when
    the table was counted on the same pixels) becomes ``nodata``."""
    lookup = table.changed_codes
    keys = np.array(sorted(lookup), dtype=np.int64).reshape(-1, 2)
    span = int(max(1, np.abs(keys).max() + 1)) if len(keys) else 1
    flat = keys[:, 0] * (2 * span + 1) + keys[:, 1]
    order = np.argsort(flat)
    flat, codes = flat[order], np.array([lookup[tuple(k)] for k in keys.tolist()], dtype=np.int64)[order]

    def fn(pixels: np.ndarray) -> np.ndarray:
        a, b = pixels[:, 0].astype(np.int64), pixels[:, 1].astype(np.int64)
        out = np.full(len(a), UNCHANGED, dtype=np.int64)
        moved = a != b
        if moved.any() and len(flat):
            key = a[moved] * (2 * span + 1) + b[moved]
            at = np.clip(np.searchsorted(flat, key), 0, len(flat) - 1)
            out[moved] = np.where(flat[at] == key, codes[at], nodata)
        elif moved.any():
            out[moved] = nodata
        return out[:, None]

    return fn
