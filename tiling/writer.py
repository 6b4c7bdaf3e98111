"""Streaming GeoTIFF output: rows are written as they are finished, under a temporary name renamed at the end.

The file is tiled and losslessly compressed (DEFLATE with a predictor). Rows are buffered until a whole row of
TIFF blocks is complete, so every block is compressed and written once; the dataset's block cache is flushed after
each block row, so memory stays at about one block row whatever the raster size. A wide raster can be written in
column panels (see :mod:`tiling.panels`): left to right, each panel from top to bottom, with panel edges on block
edges; memory is then one block row of one panel. A run that fails or is cancelled
calls :meth:`GeoTiffWriter.abort` and leaves nothing behind; an older file at the target path is only replaced by
:meth:`GeoTiffWriter.commit`.

Resumable outputs (``resume_key`` given): the temporary file has a name derived from the key, and after each block
row the file is closed and reopened (GDAL writes the TIFF directory on close, so the rows written so far survive a
kill) and a small JSON state beside the target records the key, the panel being written and its rows completed.
A later writer with the same key reopens the temporary file and continues after those rows;
:meth:`GeoTiffWriter.suspend` (cancel, crash) keeps both files for that; :meth:`GeoTiffWriter.commit` and
:meth:`GeoTiffWriter.abort` remove them, and a writer with another key removes what an earlier key left.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from osgeo import gdal

from .errors import OutputError
from .gdal_pam import pam_switched
from .statistics import BandStatistics
from .transaction import Move, publish

gdal.UseExceptions()

_GDAL_TYPES = {np.dtype(np.uint8): gdal.GDT_Byte, np.dtype(np.uint16): gdal.GDT_UInt16,
               np.dtype(np.int16): gdal.GDT_Int16, np.dtype(np.float32): gdal.GDT_Float32,
               np.dtype(np.float16): gdal.GDT_Float32}  # float16: stored as IEEE half floats (NBITS=16)
STATE_VERSION = 2
DEFAULT_BLOCK_SIZE = 256
"""TIFF block edge in pixels unless a writer is given another."""


@dataclass(frozen=True)
class RasterSpec:
    """Shape, type and georeferencing of an output raster (sizes in pixels).

    ``dtype`` float16 writes half floats (GDAL Float32 bands with NBITS=16, which GDAL ≥ 3.1 and QGIS read as
    float32): values are rounded to the nearest half float before writing, and storage is lossless from there.
    """

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
    metadata: Mapping[str, str] = field(default_factory=dict)
    interleave: str = "pixel"  # "band" suits many bands: faster compression, blocks compressed in parallel
    threads: bool = False  # compress blocks on all CPUs (GDAL NUM_THREADS; the bytes written are the same)
    gcps: Sequence[tuple[float, float, float, float, float]] = ()  # (pixel, line, x, y, z), replace geotransform
    gcp_projection: str = ""
    count_values: bool = False  # 8-bit rasters: count the values of band 1 as they are written (``value_counts``)


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

    def __init__(self, path: str | os.PathLike[str], spec: RasterSpec, block_size: int = DEFAULT_BLOCK_SIZE,
                 resume_key: str | None = None, track_statistics: bool = False) -> None:
        self.target = check_writable(path)
        self.spec = spec
        self.block = block_size
        self.resume_key = resume_key
        self.resumed_rows = 0  # rows of the panel at resumed_col an earlier run wrote
        self.resumed_col = 0  # first column of the panel an earlier run was writing (columns left of it are done)
        self._stats = BandStatistics(spec.bands) if track_statistics else None
        if spec.count_values and (np.dtype(spec.dtype) != np.uint8 or resume_key is not None):
            raise ValueError("count_values needs an 8-bit raster written in one go (counts are not resumed)")
        self.value_counts = np.zeros(256, np.int64) if spec.count_values else None  # pixels of each band-1 value
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._next_row = 0  # next row of the current panel
        self._col_off = 0  # first column of the current panel
        self._panel_width: int | None = None  # set by the panel's first write
        self._ds = None
        if resume_key is None:
            self.state_path = None
            self.temp = self.target.with_name(f".{self.target.name}.{uuid.uuid4().hex[:8]}.partial.tif")
            self._create()
            return
        self.state_path = self.target.with_name(f".{self.target.name}.resume.json")
        self.temp = self.target.with_name(f".{self.target.name}.{resume_key[:16]}.partial.tif")
        if not self._reopen():
            self._remove_leftovers()
            self._create()

    def _create(self) -> None:
        with pam_switched():  # category names live in the .aux.xml: GDAL decides when the file is created
            self._create_file()

    def _create_file(self) -> None:
        spec = self.spec
        dtype = np.dtype(spec.dtype)
        options = ["TILED=YES", f"BLOCKXSIZE={self.block}", f"BLOCKYSIZE={self.block}", "COMPRESS=DEFLATE",
                   f"PREDICTOR={3 if dtype.kind == 'f' else 2}", "BIGTIFF=IF_SAFER"]
        if dtype.kind == "f":  # DEFLATE level 1: float blocks compress ~4× faster, files ~3 % larger (still lossless)
            options.append("ZLEVEL=1")
        if dtype == np.float16:
            options.append("NBITS=16")
        if spec.interleave.lower() == "band" and spec.bands > 1:
            options.append("INTERLEAVE=BAND")
        if spec.threads:
            options.append("NUM_THREADS=ALL_CPUS")
        try:
            self._ds = gdal.GetDriverByName("GTiff").Create(str(self.temp), spec.width, spec.height, spec.bands,
                                                            _GDAL_TYPES[dtype], options)
        except RuntimeError as exc:
            raise OutputError(f"Cannot create {self.target}: {exc}. Check the folder and free disk space.") from exc
        if spec.gcps:  # an input georeferenced by GCPs only: the output keeps them
            self._ds.SetGCPs([gdal.GCP(x, y, z, p, line) for p, line, x, y, z in spec.gcps], spec.gcp_projection)
        else:
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
        if spec.metadata:
            self._ds.SetMetadata({str(k): str(v) for k, v in spec.metadata.items()})
        if self.resume_key is not None:
            self._checkpoint()  # the directory on disk and a state with 0 rows: a kill from now on can resume

    def _state(self) -> dict:
        spec = self.spec
        return {"version": STATE_VERSION, "key": self.resume_key, "temp": self.temp.name,
                "col_off": self._col_off, "rows_done": self._next_row - self._pending_rows, "width": spec.width,
                "height": spec.height, "bands": spec.bands, "dtype": np.dtype(spec.dtype).name, "block": self.block,
                "statistics": self._stats.to_json() if self._stats else None}

    def _open_update(self) -> gdal.Dataset:
        with pam_switched():
            return gdal.OpenEx(str(self.temp), gdal.OF_RASTER | gdal.OF_UPDATE,
                               open_options=["NUM_THREADS=ALL_CPUS"] if self.spec.threads else [])

    def _reopen(self) -> bool:
        """Continue the temporary file of an earlier run with the same key; False when there is none to continue."""
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        fresh = {**self._state(), "col_off": state.get("col_off"), "rows_done": state.get("rows_done"),
                 "statistics": state.get("statistics")}
        position = (state.get("col_off"), state.get("rows_done"))
        if state != fresh or not all(isinstance(v, int) for v in position) or not self.temp.is_file():
            return False
        try:
            ds = self._open_update()
        except RuntimeError:
            return False  # a file cut short by a crash: start over
        if (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) != (self.spec.width, self.spec.height, self.spec.bands):
            return False
        if self._stats is not None:
            if state["statistics"] is None:
                return False
            self._stats = BandStatistics.from_json(state["statistics"])
        self._ds = ds
        self._col_off = self.resumed_col = state["col_off"]
        self._next_row = self.resumed_rows = state["rows_done"]
        return True

    def _remove_leftovers(self) -> None:
        """Remove the state and the temporary files an earlier resumable run at this target left behind."""
        for p in self.target.parent.glob(f".{self.target.name}.*.partial.tif*"):
            p.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)

    def _checkpoint(self) -> None:
        """Make the rows written so far durable (close and reopen: GDAL writes the TIFF directory on close) and
        record them in the state file (written to a temporary name, then renamed)."""
        error = self._close_quietly()
        if error is not None:
            raise self._failed(error)
        try:
            self._ds = self._open_update()
        except RuntimeError as exc:
            raise OutputError(f"Cannot reopen {self.temp} to continue writing: {exc}.") from exc
        tmp = self.state_path.with_name(self.state_path.name + ".partial")
        tmp.write_text(json.dumps(self._state()), encoding="utf-8")
        os.replace(tmp, self.state_path)

    def write(self, row_off: int, values: np.ndarray, col_off: int = 0) -> None:
        """Append rows ``(bands, rows, width)`` starting at row ``row_off`` and column ``col_off``.

        Rows must arrive in order. The first write at a column starts a panel of that width (the whole raster's by
        default); once its last row is written the next panel starts where it ends, on a block edge.
        """
        values = values.reshape(self.spec.bands, -1, values.shape[-1])
        self._start_panel(col_off, values.shape[2])
        if row_off != self._next_row:
            raise ValueError(f"rows must be written in order: expected row {self._next_row}, got {row_off}")
        if np.dtype(self.spec.dtype) == np.float16:  # round to half floats here: GDAL's NBITS=16 truncates
            values = values.astype(np.float16).astype(np.float32)
        self._pending.append(values.astype(_storage_dtype(self.spec.dtype), copy=False))
        if self.value_counts is not None:
            self.value_counts += np.bincount(self._pending[-1][0].ravel(), minlength=256)
        self._pending_rows += values.shape[1]
        self._next_row += values.shape[1]
        if self._next_row >= self.spec.height:
            self._flush(whole_blocks_only=False)
            self._col_off += self._panel_width
            self._next_row, self._panel_width = 0, None
            if self.resume_key is not None and self._col_off < self.spec.width:
                self._checkpoint()
        elif self._pending_rows >= self.block:
            self._flush(whole_blocks_only=True)

    def _start_panel(self, col_off: int, width: int) -> None:
        """Check that a write continues the current panel, or starts the next one at a block edge."""
        if self._panel_width is None:
            ends_raster = col_off + width == self.spec.width
            if col_off != self._col_off or not 0 < width <= self.spec.width - col_off \
                    or (width % self.block and not ends_raster):
                raise ValueError(f"expected a panel starting at column {self._col_off}, a multiple of the block size "
                                 f"{self.block} wide (or reaching the raster's last column {self.spec.width}); got "
                                 f"{width} columns at column {col_off}")
            self._panel_width = width
        elif (col_off, width) != (self._col_off, self._panel_width):
            raise ValueError(f"rows of columns {col_off}–{col_off + width} arrived while the panel of columns "
                             f"{self._col_off}–{self._col_off + self._panel_width} is unfinished")

    def _flush(self, whole_blocks_only: bool) -> None:
        if not self._pending_rows:
            return
        data = np.concatenate(self._pending, axis=1) if len(self._pending) > 1 else self._pending[0]
        n = (data.shape[1] // self.block) * self.block if whole_blocks_only else data.shape[1]
        if n == 0:
            return
        start = self._next_row - self._pending_rows
        try:
            self._ds.WriteArray(data[:, :n], self._col_off, start) if self.spec.bands > 1 else \
                self._ds.GetRasterBand(1).WriteArray(data[0, :n], self._col_off, start)
            self._ds.FlushCache()
        except RuntimeError as exc:
            raise self._failed(exc) from exc
        if self._stats is not None:
            self._stats.add(data[:, :n])
        rest = data[:, n:]
        self._pending = [rest.copy()] if rest.shape[1] else []
        self._pending_rows = rest.shape[1]
        if self.resume_key is not None and whole_blocks_only:
            self._checkpoint()

    def prepare(self) -> list[Move]:
        """Write what is left and close the file, still under its temporary name; returns the moves that publish
        it (see :func:`~tiling.transaction.publish`), so that several outputs can be renamed together."""
        if self._col_off != self.spec.width:
            where = f" of the panel starting at column {self._col_off}" if self._col_off else ""
            self.abort()
            raise OutputError(f"{self.target}: only {self._next_row} of {self.spec.height} rows{where} were "
                              f"produced.")
        if self._ds is not None:
            if self._stats is not None:
                for i, stats in enumerate(self._stats.summary()):
                    if stats is not None:
                        self._ds.GetRasterBand(i + 1).SetStatistics(*stats)
            try:
                self._ds.FlushCache()
            except RuntimeError as exc:
                raise self._failed(exc) from exc
            error = self._close_quietly()  # closing writes the TIFF directory: it can fail too
            if error is not None:
                self._remove_temp()
                raise self._failed(error)
        # no statistics file of the new one: the older file's (stale statistics or styles) goes
        return [Move(self.temp, self.target), Move(Path(f"{self.temp}.aux.xml"), Path(f"{self.target}.aux.xml"))]

    def published(self) -> Path:
        """After the moves of :meth:`prepare` were published: forget the resume state; returns the target."""
        if self.state_path is not None:
            self.state_path.unlink(missing_ok=True)
        return self.target

    def commit(self) -> Path:
        """Write what is left, close, and move the file to its final name (replacing an older one)."""
        moves = self.prepare()
        try:
            publish(moves)
        except OutputError:
            self._remove_temp()
            raise
        return self.published()

    def abort(self) -> None:
        """Close and delete the temporary file (and a resume state); the target path is left as it was."""
        self._close_quietly()
        self._pending = []
        self._remove_temp()

    def _close_quietly(self) -> RuntimeError | None:
        """Close the dataset; returns what closing failed on (a full disk) instead of letting GDAL print an
        "Exception ignored" traceback from the destructor, where Python cannot raise it."""
        if self._ds is None:
            return None
        errors: list[RuntimeError] = []
        hook = sys.unraisablehook

        def keep(report) -> None:
            errors.append(report.exc_value) if isinstance(report.exc_value, RuntimeError) else hook(report)

        sys.unraisablehook = keep
        try:
            self._ds = None
        finally:
            sys.unraisablehook = hook
            gdal.ErrorReset()
        return errors[0] if errors else None

    def _failed(self, exc: RuntimeError) -> OutputError:
        """The error for a failed write, after closing the dataset (its traceback's frames hold the dataset: it
        must close now, quietly, not when the traceback goes)."""
        exc.__traceback__ = None
        self._close_quietly()
        return OutputError(f"Writing {self.target} failed: {str(exc).rstrip('.')}. Check free disk space.")

    def suspend(self) -> bool:
        """Stop, keeping what a later run with the same key needs to continue (resumable writers; others abort).

        Rows not yet in a complete block row are dropped: the resumed run computes them again. Returns True when
        something was kept.
        """
        if self.resume_key is None or self._ds is None:
            self.abort()
            return False
        self._ds = None
        self._pending = []
        return True

    @property
    def rows_done(self) -> int:
        """Rows of the current panel durably written to the temporary file (what a resumed run would skip)."""
        return self._next_row - self._pending_rows

    def _remove_temp(self) -> None:
        for p in (self.temp, Path(f"{self.temp}.aux.xml")):
            p.unlink(missing_ok=True)
        if self.state_path is not None:
            self.state_path.unlink(missing_ok=True)

    def __enter__(self) -> GeoTiffWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or self._ds is not None:
            self.abort()


def _storage_dtype(dtype: np.dtype) -> np.dtype:
    """The numpy type handed to GDAL (half floats travel as float32)."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float16 else np.dtype(dtype)
