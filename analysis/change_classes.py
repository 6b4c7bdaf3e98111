"""From–to change between two class rasters: pixel pairs counted, a compact code table, the pixel function.

Codes of the change raster: 0 = unchanged (same class on both dates), 1, 2, … = one code per from–to pair that
occurs with ``from ≠ to``, in the order of (from, to). Nodata where either date is nodata. The table of every pair
(unchanged ones too) gives pixels, area in map units², and the ground area in m² and hectares (any projected CRS, and
geographic ones by latitude; see :mod:`analysis.pixel_areas`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..tiling.outputs import ClassInfo
from ..tiling.pixelwise import PixelFunction
from .errors import ChangeInputError
from .palette import NO_MATCH_RGB, category_colours
from .pixel_areas import PixelAreas

UNCHANGED = 0
"""Code of the pixels whose class is the same on both dates."""
ARROW = " → "
SMALL = 256
"""Class values 0–255 on both dates are counted with one bincount of 65 536 bins."""
EXACT_LIMIT = 2**24
"""Class values are read as float32, exact up to ±2²⁴ − 1 (16 777 215): larger ones are refused, not rounded."""


class PairCounter:
    """Counts (and ground areas) of (from, to) class pairs accumulated window by window (memory: one entry per pair
    present). ``areas``: the pixel areas of the raster (see :mod:`analysis.pixel_areas`); where they vary by row
    (a geographic CRS) each pixel's area is summed, which needs the rows of the pixels (:attr:`by_row`)."""

    def __init__(self, areas: PixelAreas | None = None) -> None:
        self.counts: dict[tuple[int, int], int] = {}
        self.areas = areas
        self.by_row = areas is not None and areas.row_m2 is not None and areas.uniform_m2 is None
        self._row_sums: dict[tuple[int, int], float] = {}

    def square_metres(self) -> dict[tuple[int, int], float] | None:
        """The ground area of each pair in m², or None where the pixels' ground area is unknown."""
        if self.by_row:
            return dict(self._row_sums)
        if self.areas is None or self.areas.uniform_m2 is None:
            return None
        return {pair: n * self.areas.uniform_m2 for pair, n in self.counts.items()}

    def add(self, pixels: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Count the pairs of ``pixels`` ``(n, 2)`` (from, to) class values lying on raster ``rows`` ``(n,)``
        (needed when :attr:`by_row`)."""
        if not len(pixels):
            return
        a, b = pixels[:, 0].astype(np.int64), pixels[:, 1].astype(np.int64)
        low, high = min(a.min(), b.min()), max(a.max(), b.max())
        if max(-low, high) >= EXACT_LIMIT:
            raise ChangeInputError(
                f"A class value of {low if -low >= high else high} occurs: class values are compared exactly between "
                f"−{EXACT_LIMIT - 1} and {EXACT_LIMIT - 1}. Recode the classes to smaller numbers (Raster calculator, "
                "or Reclassify by table) and run again.")
        weights = self.areas.row_m2[rows] if self.by_row else None
        if low >= 0 and high < SMALL:  # the usual case: bincount
            key = a * SMALL + b
            n = np.bincount(key, minlength=SMALL * SMALL)
            keys = np.flatnonzero(n)
            pairs, counts = [divmod(int(k), SMALL) for k in keys], n[keys]
            areas = None if weights is None else np.bincount(key, weights, minlength=SMALL * SMALL)[keys]
        else:  # any other class values: one 64-bit key per pixel
            key = ((a + 2**31).astype(np.uint64) << np.uint64(32)) | (b + 2**31).astype(np.uint64)
            keys, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
            pairs = [(int(k) // 2**32 - 2**31, int(k) % 2**32 - 2**31) for k in keys.tolist()]
            areas = None if weights is None else np.bincount(inverse.ravel(), weights, minlength=len(keys))
        for i, (pair, k) in enumerate(zip(pairs, counts.tolist(), strict=True)):
            self.counts[pair] = self.counts.get(pair, 0) + k
            if areas is not None:
                self._row_sums[pair] = self._row_sums.get(pair, 0.0) + float(areas[i])


@dataclass(frozen=True)
class ClassMatch:
    """How the second raster's class values are read: ``mapping`` (second value → value in the first raster's
    numbering; empty: compared by value), the second's names in that numbering, and what to tell the user."""

    mapping: dict[int, int]
    names_to: dict[int, str]
    info: str = ""
    warning: str = ""
    named: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())  # the values each legend names

    def remap(self, pixels: np.ndarray) -> np.ndarray:
        """``pixels`` ``(n, 2)`` (from, to) with the second's values in the first's numbering. While classes are
        matched by name, a value either legend does not name is refused: it could fall on a matched value."""
        if not self.mapping:
            return pixels
        for column, (named, which) in enumerate(zip(self.named, ("first", "second"), strict=True)):
            unnamed = pixels[~np.isin(pixels[:, column], named), column]
            if len(unnamed):
                raise ChangeInputError(
                    f"The {which} class raster holds the value {unnamed[0]:.0f}, which its legend does not name, while "
                    "the classes of the two rasters are matched by name (their legends number them differently). "
                    "Name every class in both legends (category names), or give both rasters the same numbering.")
        keys = np.array(sorted(self.mapping), dtype=np.float64)
        values = np.array([self.mapping[int(k)] for k in keys], dtype=pixels.dtype)
        at = np.clip(np.searchsorted(keys, pixels[:, 1]), 0, len(keys) - 1)
        out = pixels.copy()
        hit = keys[at] == pixels[:, 1]
        out[hit, 1] = values[at[hit]]
        return out


def _name_key(name: str) -> str:
    return " ".join(name.split()).casefold()


def match_classes(names_from: Mapping[int, str], names_to: Mapping[int, str]) -> ClassMatch:
    """Match the second raster's classes to the first's by name, where both name their classes and a shared name
    sits on different values (a legend numbered differently); otherwise classes are compared by value. A named
    class of the second that the first does not have keeps its value unless the first uses that value for another
    class; then it gets a new value above every class of both."""
    identity = ClassMatch({}, dict(names_to))
    if not names_from or not names_to:
        return identity
    first_by_name: dict[str, int] = {}
    for value, name in sorted(names_from.items()):
        first_by_name.setdefault(_name_key(name), value)
    shared = {v: v if _name_key(names_from.get(v, "")) == _name_key(n) else first_by_name[_name_key(n)]
              for v, n in names_to.items() if _name_key(n) in first_by_name}  # a name on its own value stays
    clashes = sorted(v for v in set(names_from) & set(names_to) if _name_key(names_from[v]) != _name_key(names_to[v]))
    if all(v == w for v, w in shared.items()):
        if not clashes:
            return identity
        v = clashes[0]
        return ClassMatch({}, dict(names_to), warning=(
            f"The two class rasters name value {v} differently ({names_from[v]} / {names_to[v]}) and share no "
            "class name on other values: classes are compared by value. Check that both use the same legend."))
    mapping, fresh = dict(shared), max([*names_from, *names_to]) + 1
    taken = set(names_from) | set(shared.values())
    for value in sorted(set(names_to) - set(shared)):
        if value in taken:
            mapping[value], fresh = fresh, fresh + 1
        else:
            mapping[value] = value
        taken.add(mapping[value])
    moved = ", ".join(f"{names_to[v]} {v} → {w}" for v, w in sorted(mapping.items()) if v != w)
    return ClassMatch({v: w for v, w in mapping.items() if v != w}, {w: names_to[v] for v, w in mapping.items()},
                      info=f"The two class rasters number their classes differently; the second's classes are matched "
                           f"to the first's by name: {moved}.", named=(tuple(names_from), tuple(names_to)))


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
    square_metres: float | None  # None when the ground area is unknown (no CRS)

    @property
    def hectares(self) -> float | None:
        return None if self.square_metres is None else self.square_metres / 10000.0

    @property
    def name(self) -> str:
        return "no change" if self.code == UNCHANGED else f"{self.from_name}{ARROW}{self.to_name}"


@dataclass(frozen=True)
class ChangeTable:
    """Every from–to pair with its code and area, and the classes (styles) of the change raster."""

    rows: tuple[PairRow, ...]
    pixel_area: str  # the area of one pixel, for reports ("100 m²", "from 605 to 612 m² (by latitude)")
    metres: bool  # whether rows have square metres and hectares

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
                 areas: PixelAreas, square_metres: Mapping[tuple[int, int], float] | None = None) -> ChangeTable:
    """The table of ``counts`` (pairs sorted by from, then to; changed pairs numbered 1, 2, …), with each pair's
    ground area from ``square_metres`` (see :class:`PairCounter`). Class names come from each raster's category
    names, else the class value."""
    rows, code = [], 0
    metres = square_metres is not None
    for (a, b), n in sorted(counts.items()):
        if a != b:
            code += 1
        rows.append(PairRow(code if a != b else UNCHANGED, a, b, names_from.get(a, str(a)), names_to.get(b, str(b)),
                            n, n * areas.map_units2, square_metres.get((a, b), 0.0) if metres else None))
    return ChangeTable(tuple(rows), areas.describe(), metres)


def change_codes(table: ChangeTable, nodata: int, match: ClassMatch | None = None) -> PixelFunction:
    """Pixel function ``(n, 2)`` (from, to) → ``(n, 1)`` change codes, the second's values read through ``match``;
    a pair missing from the table (never when the table was counted on the same pixels) becomes ``nodata``."""
    lookup = table.changed_codes
    keys = np.array(sorted(lookup), dtype=np.int64).reshape(-1, 2)
    span = int(max(1, np.abs(keys).max() + 1)) if len(keys) else 1
    flat = keys[:, 0] * (2 * span + 1) + keys[:, 1]
    order = np.argsort(flat)
    flat, codes = flat[order], np.array([lookup[tuple(k)] for k in keys.tolist()], dtype=np.int64)[order]

    def fn(pixels: np.ndarray) -> np.ndarray:
        if match is not None:
            pixels = match.remap(pixels)
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
