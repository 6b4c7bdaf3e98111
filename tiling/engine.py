"""The run loop shared by every tiled deep-learning algorithm.

strips (read ahead) → tiles with at least one valid pixel → batches → ``predict`` → blending → finished rows →
output heads. Tiles without a valid pixel are skipped; progress and cancellation go through plain callables, so
the same loop runs under QGIS, in plain Python and in a worker process.

Feature extraction is the same loop with an output stride s: ``predict`` returns maps s times coarser than its
tiles, the grid is aligned to s and blending happens in output pixels (see :class:`~tiling.blend.StripBlender`).
A run whose heads were resumed (they report ``resumed_rows``) starts at the first grid row that still contributes
to an unwritten row, so its result equals an uninterrupted run's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .blend import Chunk, StripBlender
from .errors import DeepRasterError, RasterInputError, RunCancelled
from .grid import Tile, TileGrid
from .outputs import OutputHead
from .reader import Strip, StripReader

Predict = Callable[[np.ndarray], np.ndarray]
"""``(batch, bands, tile, tile)`` float32 normalised input → ``(batch, channels, tile/s, tile/s)`` float32 output
(s: the output stride, 1 for pixel classification)."""


@dataclass
class Callbacks:
    """How the loop reports: ``progress`` gets a fraction 0–1, ``is_cancelled`` is polled between batches."""

    progress: Callable[[float], None] = lambda fraction: None
    is_cancelled: Callable[[], bool] = lambda: False
    info: Callable[[str], None] = lambda message: None


@dataclass
class RunStats:
    """What a run did: tile counts and times in seconds."""

    tiles_total: int = 0
    tiles_predicted: int = 0
    tiles_skipped: int = 0
    tiles_resumed: int = 0  # tiles of grid rows a resumed run did not need again
    rows_resumed: int = 0  # output rows an interrupted earlier run had written
    batches: int = 0
    predict_seconds: float = 0.0
    total_seconds: float = 0.0
    outputs: list[Path] = field(default_factory=list)

    @property
    def efficiency(self) -> float:
        """Share of the wall time spent in the model (1.0: reading, blending and writing cost nothing)."""
        return self.predict_seconds / self.total_seconds if self.total_seconds else 0.0


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
    """

    def __init__(self, grid: TileGrid, reader: StripReader, predict: Predict, channels: int,
                 heads: Sequence[OutputHead], batch_size: int = 4, blend: str = "hann",
                 callbacks: Callbacks | None = None, output_stride: int = 1, batches_within_rows: bool = False,
                 pause_s: float = 0.0) -> None:
        self.grid = grid
        self.reader = reader
        self.predict = predict
        self.heads = list(heads)
        self.batch_size = max(int(batch_size), 1)
        self.callbacks = callbacks or Callbacks()
        self.stride = output_stride
        self.batches_within_rows = batches_within_rows
        self.pause_s = max(float(pause_s), 0.0)
        resumed = [getattr(head, "resumed_rows", 0) for head in self.heads]
        self.start_row = min(resumed) if resumed else 0
        self.blender = StripBlender(grid, channels, blend, output_stride, self.start_row)
        self.stats = RunStats(tiles_total=len(grid), rows_resumed=self.start_row)
        self._blended_row = -1  # last grid row whose tiles reached the blender
        self._out_tile = grid.tile_size // output_stride

    def run(self) -> RunStats:
        """Process every tile, commit the outputs and return the statistics. Nothing is left behind on failure,
        except what resumable heads keep when the run is cancelled or crashes."""
        start = time.perf_counter()
        try:
            first = self._resume_point()
            pending: list[_Pending] = []
            for strip in self.reader:
                self._check_cancel()
                for tile in self.grid.row(strip.grid_row):
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
            if self.stats.tiles_predicted == 0 and first == 0:
                raise RasterInputError(
                    "The raster has no valid pixel in the processed area (all nodata, or all removed by the mask). "
                    "Check the nodata value, the extent and the mask settings."
                )
            self._release(self.grid.region.row_end)
            self.stats.outputs = [head.commit() for head in self.heads]
        except BaseException as exc:
            self.reader.close()
            keep = isinstance(exc, RunCancelled) or not isinstance(exc, DeepRasterError)
            for head in self.heads:
                suspend = getattr(head, "suspend", None)
                if keep and suspend is not None:
                    if suspend():
                        self.callbacks.info("The partial result was kept: run again with the same parameters and "
                                            "output file to continue where this run stopped.")
                else:
                    head.abort()
            raise
        self.stats.total_seconds = time.perf_counter() - start
        self.callbacks.progress(1.0)
        return self.stats

    def _resume_point(self) -> int:
        """First grid row to read: 0, or for a resumed run the first row reaching an unwritten output row."""
        if self.start_row == 0:
            return 0
        first = self.grid.first_row_reaching(self.grid.region.row_off + self.start_row * self.stride)
        self.reader.skip_to(first)
        self.stats.tiles_resumed = first * self.grid.shape[1]
        self.callbacks.info(f"Resuming an interrupted run: {self.start_row} of {self.blender.out_region.height} "
                            f"output rows were already written; continuing from tile row {first + 1} of "
                            f"{self.grid.shape[0]}.")
        return first

    def _check_cancel(self) -> None:
        if self.callbacks.is_cancelled():
            raise RunCancelled("The run was cancelled; no output was written.")

    def _report(self) -> None:
        done = self.stats.tiles_predicted + self.stats.tiles_skipped + self.stats.tiles_resumed
        self.callbacks.progress(min(done / max(self.stats.tiles_total, 1), 1.0))

    def _cut(self, strip: Strip, tile: Tile) -> _Pending | None:
        """The tile's input and validity from its strip, or None when it has no valid pixel in the region."""
        cols = slice(tile.window.col_off - strip.window.col_off, tile.window.col_end - strip.window.col_off)
        valid = strip.valid[:, cols]
        part = tile.window.intersection(self.grid.region).relative_to(tile.window)
        if part.is_empty or not valid[part.slices()].any():
            return None
        return _Pending(tile, strip.data[:, :, cols], valid)

    def _predict_and_blend(self, pending: list[_Pending]) -> None:
        self._check_cancel()
        batch = np.stack([p.data for p in pending])
        t0 = time.perf_counter()
        out = self.predict(batch)
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
            self._check_cancel()
            time.sleep(min(left, 0.1))

    def _release(self, row: int) -> None:
        """Finish output rows above raster row ``row`` and hand them to every head (rows a resumed head already
        has are not given again)."""
        for chunk in self.blender.release_until(row):
            for head in self.heads:
                skip = getattr(head, "resumed_rows", 0) - chunk.row_off
                if skip <= 0:
                    head.write(chunk)
                elif skip < chunk.valid.shape[0]:
                    head.write(Chunk(chunk.row_off + skip, chunk.values[:, skip:], chunk.valid[skip:]))
