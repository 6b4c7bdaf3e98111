"""Streaming GeoTIFF output: rows are written as they are finished, under a temporary name renamed at the end.

The file is tiled and losslessly compressed (DEFLATE with a predictor). Rows are buffered until a whole row of
TIFF blocks is complete, so every block is compressed and written once; the dataset's block cache is flushed after
each block row, so memory stays at about one block row whatever the raster size. A run that fails or is cancelled
calls :meth:`GeoTiffWriter.abort` and leaves nothing behind; an older file at the target path is only replaced by
:meth:`GeoTiffWriter.commit`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal

from .errors import OutputError

gdal.UseExceptions()

_GDAL_TYPES = {np.dtype(np.uint8): gdal.GDT_Byte, np.dtype(np.uint16): gdal.GDT_UInt16,
               np.dtype(np.int16): gdal.GDT_Int16, np.dtype(np.float32): gdal.GDT_Float32}


@dataclass(frozen=True)
class RasterSpec:
    """Shape, type and georeferencing of an output raster (sizes in pixels)."""

    width: int
    height: int
    bands: int
    dtype: np.dtype
    geotransform: tuple[float, ...]
    projection: str
    nodata: float | None = None
    band_descriptions: Sequence[str] = ()
    color_table: dict[int, tuple[int, int, int]] | None = None
    category_names: Sequence[str] = ()


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Raise :class:`OutputError` unless a file can be created at ``path``; returns it as a Path."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"Cannot write {target}: the folder {folder} does not exist. Choose an existing folder.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot write {target}: no permission to write in {folder}. Choose another folder.")
    if target.is_dir():
        raise OutputError(f"Cannot write {target}: it is a folder. Give a file name ending in .tif.")
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputError(f"Cannot overwrite {target}: the file is read-only. Choose another file name.")
    return target


class GeoTiffWriter:
    """Writes a :class:`RasterSpec` raster row strip by row strip; use as a context manager or commit/abort."""

    def __init__(self, path: str | os.PathLike[str], spec: RasterSpec, block_size: int = 256) -> None:
        self.target = check_writable(path)
        self.spec = spec
        self.block = block_size
        self.temp = self.target.with_name(f".{self.target.name}.{uuid.uuid4().hex[:8]}.partial.tif")
        dtype = np.dtype(spec.dtype)
        options = ["TILED=YES", f"BLOCKXSIZE={block_size}", f"BLOCKYSIZE={block_size}", "COMPRESS=DEFLATE",
                   f"PREDICTOR={3 if dtype.kind == 'f' else 2}", "BIGTIFF=IF_SAFER"]
        try:
            self._ds = gdal.GetDriverByName("GTiff").Create(str(self.temp), spec.width, spec.height, spec.bands,
                                                            _GDAL_TYPES[dtype], options)
        except RuntimeError as exc:
            raise OutputError(f"Cannot create {self.target}: {exc}. Check the folder and free disk space.") from exc
        self._ds.SetGeoTransform(spec.geotransform)
        if spec.projection:
            self._ds.SetProjection(spec.projection)
        for i in range(spec.bands):
            band = self._ds.GetRasterBand(i + 1)
            if spec.nodata is not None:
                band.SetNoDataValue(spec.nodata)
            if i < len(spec.band_descriptions):
                band.SetDescription(spec.band_descriptions[i])
        if spec.color_table:
            table = gdal.ColorTable()
            for value, rgb in spec.color_table.items():
                table.SetColorEntry(int(value), (*rgb, 255))
            self._ds.GetRasterBand(1).SetRasterColorTable(table)
            self._ds.GetRasterBand(1).SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
        if spec.category_names:
            self._ds.GetRasterBand(1).SetCategoryNames(list(spec.category_names))
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._next_row = 0

    def write(self, row_off: int, values: np.ndarray) -> None:
        """Append rows ``(bands, rows, width)`` starting at ``row_off``; rows must arrive in order."""
        if row_off != self._next_row:
            raise ValueError(f"rows must be written in order: expected row {self._next_row}, got {row_off}")
        values = values.reshape(self.spec.bands, -1, self.spec.width)
        self._pending.append(values.astype(self.spec.dtype, copy=False))
        self._pending_rows += values.shape[1]
        self._next_row += values.shape[1]
        if self._pending_rows >= self.block:
            self._flush(whole_blocks_only=True)

    def _flush(self, whole_blocks_only: bool) -> None:
        if not self._pending_rows:
            return
        data = np.concatenate(self._pending, axis=1) if len(self._pending) > 1 else self._pending[0]
        n = (data.shape[1] // self.block) * self.block if whole_blocks_only else data.shape[1]
        if n == 0:
            return
        start = self._next_row - self._pending_rows
        try:
            self._ds.WriteArray(data[:, :n], 0, start) if self.spec.bands > 1 else \
                self._ds.GetRasterBand(1).WriteArray(data[0, :n], 0, start)
            self._ds.FlushCache()
        except RuntimeError as exc:
            raise OutputError(f"Writing {self.target} failed: {exc}. Check free disk space.") from exc
        rest = data[:, n:]
        self._pending = [rest.copy()] if rest.shape[1] else []
        self._pending_rows = rest.shape[1]

    def commit(self) -> Path:
        """Write what is left, close, and move the file to its final name (replacing an older one)."""
        if self._next_row != self.spec.height:
            self.abort()
            raise OutputError(f"{self.target}: only {self._next_row} of {self.spec.height} rows were produced.")
        self._flush(whole_blocks_only=False)
        self._ds.FlushCache()
        self._ds = None  # closes the file
        aux_temp, aux_target = Path(f"{self.temp}.aux.xml"), Path(f"{self.target}.aux.xml")
        try:
            os.replace(self.temp, self.target)
            if aux_temp.exists():
                os.replace(aux_temp, aux_target)
            else:
                aux_target.unlink(missing_ok=True)  # stale statistics or styles of an older file
        except OSError as exc:
            self._remove_temp()
            raise OutputError(f"Cannot move the result to {self.target}: {exc}") from exc
        return self.target

    def abort(self) -> None:
        """Close and delete the temporary file; the target path is left as it was."""
        self._ds = None
        self._pending = []
        self._remove_temp()

    def _remove_temp(self) -> None:
        for p in (self.temp, Path(f"{self.temp}.aux.xml")):
            p.unlink(missing_ok=True)

    def __enter__(self) -> GeoTiffWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self._ds is not None:
            self.abort()
