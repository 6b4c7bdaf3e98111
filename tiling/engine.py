"""The run loop shared by every tiled deep-learning algorithm.

strips (read ahead) → tiles with at least one valid pixel → batches → ``predict`` → blending → finished rows →
output heads. Tiles without a valid pixel are skipped; progress and cancellation go through plain callables, so
the same loop runs under QGIS, in plain Python and in a worker process.

Feature extraction is the same loop with an output stride s: ``predict`` returns maps s times coarser than its
tiles, the grid is aligned to s and blending happens in output pixels (see :class:`~tiling.blend.StripBlender`).
A region wider than the panel width is produced in column panels (see :mod:`tiling.panels`), so memory does not
grow with the raster's width; the result is the same. A run whose heads were resumed (they report ``resumed_col``
and ``resumed_rows``) starts in the unfinished panel at the first grid row that still contributes to an unwritten
row, so its result equals an uninterrupted run's. A run given a ``part`` produces only that window of the output
(one piece of a distributed run, see :mod:`scale`), with the same pixels as the whole run.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .allocator import freed_memory_kept
from .blend import Chunk, StripBlender
from .callbacks import Callbacks, check_cancel
from .errors import DeepRasterError, RasterInputError, RunCancelled
from .grid import Tile, TileGrid
from .outputs import OutputHead
from .panels import DEFAULT_PANEL_WIDTH, Panel, panel_of, plan_panels
from .reader import Strip, StripReader
from .transaction import commit_all
from .window import Window
from .writer import DEFAULT_BLOCK_SIZE

Predict = Callable[[np.ndarray], np.ndarray]
"""``(batch, bands, tile, tile)`` float32 normalised input → ``(batch, channels, tile/s, tile/s)`` float32 output
(s: the output stride, 1 for pixel classification)."""


@dataclass
class RunStats:
    """What a run did: tile counts and times in seconds."""

    tiles_total: int = 0  # tiles of every panel (tiles reaching two panels count twice)
    tiles_predicted: int = 0
    tiles_skipped: int = 0
    tiles_resumed: int = 0  # tiles of grid rows a resumed run did not need again
    rows_resumed: int = 0  # output rows (of the unfinished panel) an interrupted earlier run had written
    panels: int = 1  # column panels the region was produced in
    batches: int = 0
    predict_seconds: float = 0.0  # summed over the workers of a distributed run
    total_seconds: float = 0.0
    outputs: list[Path] = field(default_factory=list)
    workers: int = 1  # processes that ran the model at once (Dask workers)

    @property
    def efficiency(self) -> float:
        """Share of the wall time (of every worker) spent in the model (1.0: reading, blending and writing cost
        nothing)."""
        return self.predict_seconds / (self.total_seconds * self.workers) if self.total_seconds else 0.0


@dataclass
class _Pending:
    tile: Tile
    data: np.ndarray
    valid: np.ndarray


class TiledRun:
    """One run over ``grid``: reads with ``reader``, predicts with ``predict``, writes with ``heads``.

    Args:
        grid: tiles covering the region to produce (aligned to ``output_stride``).
        reader: strip reader over the same grid.
        predict: the model step (see :data:`Predict`).
        channels: output channels of ``predict``.
        heads: output heads; all committed at the end, all aborted on error (suspended, when they can, on cancel
            or on an unexpected failure, so that the run can be resumed).
        batch_size: tiles per ``predict`` call.
        blend: blending window, ``"hann"`` (default) or ``"centre_crop"``.
        callbacks: progress, cancellation and messages.
        output_stride: how much coarser ``predict``'s output is than its input (1: same pixels).
        batches_within_rows: never mix tiles of two grid rows in one batch, so every batch is the same whether a
            run starts at the top or is resumed (results of some models, e.g. int8 ones, depend on the batch).
        pause_s: seconds to wait after each batch (keeps the computer usable during long runs; cancel still works).
        panel_width: widest column panel in input pixels (see :func:`~tiling.panels.plan_panels`).
        part: produce only this window of the output (output pixels from the region's top-left; its columns one
            panel): with every tile of the whole grid that reaches it, weighted as in the whole grid, so its pixels
            equal the whole run's. The heads are made for the part's window: chunks reach them in its coordinates.
            An all-nodata part is not an error (the whole raster was checked before it was cut into parts).
    """

    def __init__(self, grid: TileGrid, reader: StripReader, predict: Predict, channels: int,
                 heads: Sequence[OutputHead], batch_size: int = 4, blend: str = "hann",
                 callbacks: Callbacks | None = None, output_stride: int = 1, batches_within_rows: bool = False,
                 pause_s: float = 0.0, panel_width: int = DEFAULT_PANEL_WIDTH, part: Window | None = None) -> None:
        self.grid = grid
        self._settled = False  # set when the heads are committed, or cleaned up after a stop
        self.reader = reader
        self.predict = predict
        self.channels = channels
        self.blend = blend
        self.heads = list(heads)
        self.batch_size = max(int(batch_size), 1)
        self.callbacks = callbacks or Callbacks()
        self.stride = output_stride
        self.batches_within_rows = batches_within_rows
        self.pause_s = max(float(pause_s), 0.0)
        self.part = part
        if part is None:
            block = math.lcm(*(head.block_size for head in self.heads)) if self.heads else DEFAULT_BLOCK_SIZE
            self.panels = plan_panels(grid, output_stride, block, panel_width)
            positions = [_resume_position(head) for head in self.heads]
            self.start_col, self.start_row = min(positions) if positions else (0, 0)
            tiles, resumed = sum(len(p.grid) for p in self.panels), self.start_row
        else:
            self.panels = [panel_of(grid, part.col_off, part.col_end, output_stride)]
            self.start_col, self.start_row = part.col_off, part.row_off
            first, end = self._grid_rows(self.panels[0].grid, part.row_off)
            tiles, resumed = (end - first) * self.panels[0].grid.shape[1], 0
        self.stats = RunStats(tiles_total=tiles, rows_resumed=resumed, panels=len(self.panels))
        self.blender: StripBlender | None = None  # the current panel's
        self._blended_row = -1  # last grid row whose tiles reached the blender
        self._out_tile = grid.tile_size // output_stride
        self._batch_tiles = 0  # tiles in the batch being predicted
        self._eta = ProgressClock()
        if hasattr(predict, "poll"):  # a predictor that calls the model several times per batch (the CPU's)
            predict.poll = self._poll

    def run(self) -> RunStats:
        """Process every tile, commit the outputs and return the statistics. Nothing is left behind on failure,
        except what resumable heads keep when the run is cancelled or crashes."""
        try:
            with freed_memory_kept():
                return self._run()
        except BaseException:
            if not self._settled:  # stopped before the run loop began (a SIGTERM during its set-up)
                self._unwind(self.reader, sys.exc_info()[1])
            raise
        finally:  # the predictor may outlive the run (cached on a Dask worker): drop the link back, stop its threads
            if hasattr(self.predict, "poll"):
                self.predict.poll = None
            close = getattr(self.predict, "close", None)
            if callable(close):
                close()

    def _run(self) -> RunStats:
        start = time.perf_counter()
        self._eta = ProgressClock()
        reader = self.reader
        try:
            for panel in self.panels:
                if panel.col_end <= self.start_col:  # finished by an interrupted earlier run
                    self.stats.tiles_resumed += len(panel.grid)
                    continue
                reader = None  # the previous panel's reader and buffers go before the next panel's come
                whole = len(self.panels) == 1 and self.part is None  # a part's panel is narrower than the grid
                reader = self.reader if whole else self.reader.for_grid(panel.grid)
                self._run_panel(panel, reader, self.start_row if panel.col_off == self.start_col else 0)
            if self.stats.tiles_predicted == 0 and self.start_col == self.start_row == 0 and self.part is None:
                raise RasterInputError(
                    "The raster has no valid pixel in the processed area (all nodata, or all removed by the mask). "
                    "Check the nodata value, the extent and the mask settings."
                )
            self.stats.outputs = commit_all(self.heads)  # all renamed together, or none
            self._settled = True
        finally:
            if not self._settled:  # left by an exception, whichever (KeyboardInterrupt and SystemExit too)
                self._unwind(reader, sys.exc_info()[1])
        self.stats.total_seconds = time.perf_counter() - start
        self.callbacks.progress(1.0)
        return self.stats

    def _unwind(self, reader: StripReader | None, error: BaseException | None) -> None:
        """Clean up after ``error`` stopped the run: stop the reader's thread, then keep what resumable heads wrote
        (see :func:`keeps_partial_result`) or abort every head."""
        self._settled = True
        if reader is not None:
            reader.close()
        keep = keeps_partial_result(error)
        for head in self.heads:
            if not keep:
                head.abort()
            elif head.suspend():
                self.callbacks.info("The partial result was kept: run again with the same parameters and output "
                                    "file to continue where this run stopped.")

    def _run_panel(self, panel: Panel, reader: StripReader, start_row: int) -> None:
        """Produce one panel's output columns from the top (or from ``start_row``, resuming) to the bottom."""
        grid = panel.grid
        self.blender = None
        self.blender = StripBlender(grid, self.channels, self.blend, self.stride, start_row,
                                    (panel.col_off, panel.col_end))
        self._blended_row = -1
        if self.part is not None:
            reader.skip_to(*self._grid_rows(grid, start_row))
        elif start_row:
            self._resume(grid, reader, start_row)
        pending: list[_Pending] = []
        for strip in reader:
            check_cancel(self.callbacks)
            for tile in grid.row(strip.grid_row):
                item = self._cut(strip, tile)
                if item is None:
                    self.stats.tiles_skipped += 1
                    continue
                pending.append(item)
                if len(pending) == self.batch_size:
                    self._predict_and_blend(pending)
                    pending = []
            if pending and self.batches_within_rows:
                self._predict_and_blend(pending)
                pending = []
            self._report()
        if pending:
            self._predict_and_blend(pending)
        self._release(grid.region.row_end if self.part is None else self._input_row(self.part.row_end))

    def _input_row(self, out_row: int) -> int:
        """The raster row where output row ``out_row`` (from the region's top) starts."""
        return self.grid.region.row_off + out_row * self.stride

    def _grid_rows(self, grid: TileGrid, start_row: int) -> tuple[int, int]:
        """``(first, end)``: the grid rows whose tiles reach output rows ``start_row`` to the part's end (the
        region's end without a part)."""
        first = grid.first_row_reaching(self._input_row(start_row))
        if self.part is None:
            return first, len(grid.row_starts)
        end_input = self._input_row(self.part.row_end)
        return first, next((i for i, r in enumerate(grid.row_starts) if r >= end_input), len(grid.row_starts))

    def _resume(self, grid: TileGrid, reader: StripReader, start_row: int) -> None:
        """Start reading at the first grid row that reaches an output row an interrupted run did not write."""
        first = grid.first_row_reaching(grid.region.row_off + start_row * self.stride)
        reader.skip_to(first)
        self.stats.tiles_resumed += first * grid.shape[1]
        where = f" of columns {self.blender.out_region.col_off}–{self.blender.out_region.col_end}" \
            if len(self.panels) > 1 else ""
        self.callbacks.info(f"Resuming an interrupted run: {start_row} of {self.blender.out_region.height} output "
                            f"rows{where} were already written; continuing from tile row {first + 1} of "
                            f"{grid.shape[0]}.")

    def _report(self, batch_fraction: float = 0.0) -> None:
        """Progress in tiles (a batch being predicted counts by the share ``batch_fraction`` done), and the tile
        count with the estimated time left as the progress text."""
        done = self.stats.tiles_predicted + self.stats.tiles_skipped + self.stats.tiles_resumed
        done += batch_fraction * self._batch_tiles
        total = max(self.stats.tiles_total, 1)
        self.callbacks.progress(min(done / total, 1.0))
        left = self._eta.seconds_left(self.stats.tiles_predicted + batch_fraction * self._batch_tiles,
                                      done, total)
        text = f"Tile {min(round(done), total)} of {total}"
        self._eta.stage(self.callbacks, text if left is None else f"{text}, about {format_duration(left)} left")

    def _poll(self, batch_fraction: float) -> None:
        """Between two model calls of one batch: report the tiles done and stop if the user cancelled."""
        self._report(batch_fraction)
        check_cancel(self.callbacks)

    def _cut(self, strip: Strip, tile: Tile) -> _Pending | None:
        """The tile's input and validity from its strip, or None when it has no valid pixel in the region."""
        cols = slice(tile.window.col_off - strip.window.col_off, tile.window.col_end - strip.window.col_off)
        valid = strip.valid[:, cols]
        part = tile.window.intersection(self.grid.region).relative_to(tile.window)
        if part.is_empty or not valid[part.slices()].any():
            return None
        return _Pending(tile, strip.data[:, :, cols], valid)

    def _predict_and_blend(self, pending: list[_Pending]) -> None:
        check_cancel(self.callbacks)
        batch = np.stack([p.data for p in pending])
        self._batch_tiles = len(pending)
        t0 = time.perf_counter()
        out = self.predict(batch)
        self._batch_tiles = 0
        self.stats.predict_seconds += time.perf_counter() - t0
        self.stats.batches += 1
        n = self._out_tile
        if out.shape[0] != len(pending) or out.shape[2:] != (n, n):
            raise DeepRasterError(
                f"The model returned outputs of shape {tuple(out.shape)} for {len(pending)} tiles of "
                f"{self.grid.tile_size} px; expected ({len(pending)}, channels, {n}, {n}) with output stride "
                f"{self.stride}. Choose a tile size that is a multiple of the model's stride and size divisor."
            )
        for item, prediction in zip(pending, out, strict=True):
            if item.tile.grid_row != self._blended_row:
                self._release(self.grid.row_starts[item.tile.grid_row])
                self._blended_row = item.tile.grid_row
            self.blender.add(item.tile, prediction, item.valid)
        self.stats.tiles_predicted += len(pending)
        self._report()
        self._pause()

    def _pause(self) -> None:
        """Sleep ``pause_s`` in short slices, so a cancel during the pause is seen within 0.1 s."""
        end = time.perf_counter() + self.pause_s
        while (left := end - time.perf_counter()) > 0:
            check_cancel(self.callbacks)
            time.sleep(min(left, 0.1))

    def _release(self, row: int) -> None:
        """Finish the current panel's output rows above raster row ``row`` and hand them to every head (what a
        resumed head already has is not given again)."""
        for chunk in self.blender.release_until(row):
            if self.part is not None:  # into the part's coordinates: its heads were made for its window
                chunk = Chunk(chunk.row_off - self.part.row_off, chunk.values, chunk.valid,
                              chunk.col_off - self.part.col_off)
            for head in self.heads:
                head_col, head_rows = _resume_position(head)
                skip = head_rows - chunk.row_off if chunk.col_off == head_col else 0
                if chunk.col_off < head_col or skip >= chunk.valid.shape[0]:
                    continue
                if skip <= 0:
                    head.write(chunk)
                else:
                    head.write(Chunk(chunk.row_off + skip, chunk.values[:, skip:], chunk.valid[skip:], chunk.col_off))


class ProgressClock:
    """Estimates the time left from the rate of predicted tiles (skipped and resumed tiles cost next to nothing)."""

    STAGE_EVERY_S = 2.0
    """Seconds between two progress texts (``qgis_process`` prints each one as a log line)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self._last_stage = -self.STAGE_EVERY_S

    def stage(self, callbacks: Callbacks, text: str) -> None:
        """Show ``text`` as the progress text unless one was shown less than :attr:`STAGE_EVERY_S` ago."""
        now = time.perf_counter()
        if now - self._last_stage >= self.STAGE_EVERY_S:
            self._last_stage = now
            callbacks.stage(text)

    def seconds_left(self, predicted: float, done: float, total: int) -> float | None:
        """Seconds left for the ``total - done`` tiles still to go, or None before the first tile is predicted."""
        if predicted < 0.5:
            return None
        return (time.perf_counter() - self.start) / predicted * max(total - done, 0.0)


def format_duration(seconds: float) -> str:
    """``"40 s"``, ``"3 min"`` or ``"1 h 05 min"``."""
    if seconds < 90:
        return f"{max(round(seconds), 1)} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _resume_position(head: OutputHead) -> tuple[int, int]:
    """``(output column, output row)`` where a head continues: an earlier run wrote every column left of that
    column and that many rows of the panel starting there; ``(0, 0)`` for a fresh head."""
    return head.resumed_col, head.resumed_rows


def keeps_partial_result(error: BaseException | None) -> bool:
    """Whether a run stopped by ``error`` keeps what resumable heads wrote: yes after a cancel or an unexpected
    failure (a bug, KeyboardInterrupt, SystemExit, MemoryError: running again may succeed), no after an input, model
    or output error (a :class:`~tiling.errors.DeepRasterError`: the same run would fail again)."""
    return isinstance(error, RunCancelled) or not isinstance(error, DeepRasterError)
