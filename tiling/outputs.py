"""Output heads: turn blended model outputs (:class:`~tiling.blend.Chunk`) into written raster rows.

Each head owns a :class:`~tiling.writer.GeoTiffWriter`; nodata in the input (or pixels no tile covered) come out
as the head's nodata value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .blend import Chunk
from .grid import Window
from .reader import RasterSource
from .writer import GeoTiffWriter, RasterSpec

CLASS_NODATA = 255
PERCENT_NODATA = 255


class OutputHead(Protocol):
    """What the run loop needs from an output."""

    def write(self, chunk: Chunk) -> None: ...

    def commit(self) -> Path: ...

    def abort(self) -> None: ...


@dataclass(frozen=True)
class ClassInfo:
    """A class as written to the class raster: value (0–254), name, RGB colour."""

    value: int
    name: str
    rgb: tuple[int, int, int]


def _spec(source: RasterSource, region: Window, bands: int, dtype: type, nodata: float, **extra) -> RasterSpec:
    return RasterSpec(width=region.width, height=region.height, bands=bands, dtype=np.dtype(dtype),
                      geotransform=source.window_geotransform(region), projection=source.projection,
                      nodata=nodata, **extra)


class ProbabilityHead:
    """One band per model output channel: float32 in 0–1 (nodata NaN) or uint8 percent 0–100 (nodata 255)."""

    def __init__(self, path: str, source: RasterSource, region: Window, names: Sequence[str], percent: bool) -> None:
        self.percent = percent
        dtype, nodata = (np.uint8, PERCENT_NODATA) if percent else (np.float32, float("nan"))
        descriptions = [f"probability of {n}" + (" (%)" if percent else "") for n in names]
        self.writer = GeoTiffWriter(path, _spec(source, region, len(names), dtype, nodata,
                                                band_descriptions=descriptions))

    def write(self, chunk: Chunk) -> None:
        invalid = ~chunk.valid
        if self.percent:
            out = np.rint(np.clip(chunk.values, 0.0, 1.0) * 100.0).astype(np.uint8)
            out[:, invalid] = PERCENT_NODATA
        else:
            out = chunk.values.copy()
            out[:, invalid] = np.nan
        self.writer.write(chunk.row_off, out)

    def commit(self) -> Path:
        return self.writer.commit()

    def abort(self) -> None:
        self.writer.abort()


class ClassHead:
    """The most probable class per pixel as uint8 class values, with a colour table and category names.

    With ``binary_threshold`` set, the single output channel is a probability: the second class is written where it
    is at least the threshold, the first elsewhere. Otherwise channel ``i`` stands for ``classes[i]``.
    """

    def __init__(self, path: str, source: RasterSource, region: Window, classes: Sequence[ClassInfo],
                 binary_threshold: float | None = None) -> None:
        self.binary_threshold = binary_threshold
        self.lut = np.array([c.value for c in classes], dtype=np.uint8)
        names = [""] * (max(c.value for c in classes) + 1)
        for c in classes:
            names[c.value] = c.name
        self.writer = GeoTiffWriter(path, _spec(source, region, 1, np.uint8, CLASS_NODATA,
                                                band_descriptions=["class"],
                                                color_table={c.value: c.rgb for c in classes},
                                                category_names=names))

    def write(self, chunk: Chunk) -> None:
        if self.binary_threshold is not None:
            index = (chunk.values[0] >= self.binary_threshold).astype(np.intp)
        else:
            index = np.argmax(chunk.values, axis=0)
        out = self.lut[index]
        out[~chunk.valid] = CLASS_NODATA
        self.writer.write(chunk.row_off, out[None])

    def commit(self) -> Path:
        return self.writer.commit()

    def abort(self) -> None:
        self.writer.abort()
