"""Writing finished pieces into the final outputs, in order, as they arrive.

The outputs' writers take rows panel by panel, top to bottom (see :class:`~tiling.writer.GeoTiffWriter`); pieces
finish in any order (:class:`InOrder` hands them on in order). A finished piece waits on disk until every piece
before it is written, then is copied block row by block row (memory: one block row of a panel) and deleted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import numpy as np
from osgeo import gdal

from ..tiling.errors import OutputError
from ..tiling.window import Window
from ..tiling.writer import GeoTiffWriter

gdal.UseExceptions()


class InOrder:
    """Hands values that arrive in any order to ``consume(index, value)`` in index order (0, 1, 2 …), each as soon
    as every one before it has been handed on; the others wait here."""

    def __init__(self, consume: Callable[[int, object], None]) -> None:
        self.consume = consume
        self.next = 0
        self._ready: dict[int, object] = {}

    def add(self, index: int, value: object) -> None:
        """Value ``index`` arrived: hand it on, with every waiting value that follows it."""
        self._ready[index] = value
        while self.next in self._ready:
            self.consume(self.next, self._ready.pop(self.next))
            self.next += 1


def copy_pieces(writers: Mapping[str, GeoTiffWriter], part: Window, files: Mapping[str, str]) -> None:
    """Write the files of one finished piece (output key → GeoTIFF of the window ``part``) into ``writers``, then
    delete them."""
    for key, writer in writers.items():
        copy_piece(writer, files[key], part)
        os.remove(files[key])


def copy_piece(writer: GeoTiffWriter, path: str, part: Window) -> None:
    """Write the piece GeoTIFF ``path`` (the window ``part`` of the output) through ``writer``, one block row at a
    time, values as stored."""
    try:
        ds = gdal.Open(path, gdal.GA_ReadOnly)
    except RuntimeError as exc:
        raise OutputError(f"The piece {path} of the output is missing or unreadable ({exc}): was the folder on a "
                          "filesystem that every Dask worker and this computer share?") from exc
    if (ds.RasterXSize, ds.RasterYSize) != (part.width, part.height):
        raise OutputError(f"The piece {path} is {ds.RasterXSize} × {ds.RasterYSize} px; expected "
                          f"{part.width} × {part.height} px.")
    step = writer.block
    for row in range(0, part.height, step):
        n = min(step, part.height - row)
        values = np.asarray(ds.ReadAsArray(0, row, part.width, n)).reshape(ds.RasterCount, n, part.width)
        writer.write(part.row_off + row, values, part.col_off)
    ds = None
