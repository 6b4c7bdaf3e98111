"""The run loop shared by every tiled deep-learning algorithm.

strips (read ahead) → tiles with at least one valid pixel → batches → ``predict`` → blending → finished rows →
output heads. Tiles without a valid pixel are skipped; progress and cancellation go through plain callables, so
the same loop runs under QGIS, in plain Python and in a worker process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .blend import StripBlender
from .errors import RasterInputError, RunCancelled
from .grid import Tile, TileGrid
from .outputs import OutputHead
from .reader import Strip, StripReader

Predict = Callable[[np.ndarray], np.ndarray]
"""``(batch, bands, tile, tile)`` float32 normalised input → ``(batch, channels, tile, tile)`` float32 output."""


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
        grid: tiles covering the region to produce.
        reader: strip reader over the same grid.
        predict: the model step (see :data:`Predict`).
        channels: output channels of ``predict``.
        heads: output heads; all committed at the end, all aborted on error or cancel.
        batch_size: tiles per ``predict`` call.
        blend: blending window, ``"hann"`` (default) or ``"centre_crop"``.
        callbacks: progress, cancellation and messages.
    """

    def __init__(self, grid: TileGrid, reader: StripReader, predict: Predict, channels: int,
                 heads: Sequence[OutputHead], batch_size: int = 4, blend: str = "hann",
                 callbacks: Callbacks | None = None) -> None:
        self.grid = grid
        self.reader = reader
        self.predict = predict
        self.heads = list(heads)
        self.batch_size = max(int(batch_size), 1)
        self.callbacks = callbacks or Callbacks()
        self.blender = StripBlender(grid, channels, blend)
        self.stats = RunStats(tiles_total=len(grid))
        self._blended_row = -1  # last grid row whose tiles reached the blender

    def run(self) -> RunStats:
        """Process every tile, commit the outputs and return the statistics. Nothing is left behind on failure."""
        start = time.perf_counter()
        try:
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
                self._report()
            if pending:
                self._predict_and_blend(pending)
            if self.stats.tiles_predicted == 0:
                raise RasterInputError(
                    "The raster has no valid pixel in the processed area (all nodata, or all removed by the mask). "
                    "Check the nodata value, the extent and the mask settings."
                )
            self._release(self.grid.region.row_end)
            self.stats.outputs = [head.commit() for head in self.heads]
        except BaseException:
            self.reader.close()
            for head in self.heads:
                head.abort()
            raise
        self.stats.total_seconds = time.perf_counter() - start
        self.callbacks.progress(1.0)
        return self.stats

    def _check_cancel(self) -> None:
        if self.callbacks.is_cancelled():
            raise RunCancelled("The run was cancelled; no output was written.")

    def _report(self) -> None:
        done = self.stats.tiles_predicted + self.stats.tiles_skipped
        self.callbacks.progress(done / max(self.stats.tiles_total, 1))

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
        for item, prediction in zip(pending, out, strict=True):
            if item.tile.grid_row != self._blended_row:
                self._release(self.grid.row_starts[item.tile.grid_row])
                self._blended_row = item.tile.grid_row
            self.blender.add(item.tile, prediction, item.valid)
        self.stats.tiles_predicted += len(pending)
        self._report()

    def _release(self, row: int) -> None:
        """Finish rows above raster row ``row`` and hand them to every head."""
        for chunk in self.blender.release_until(row):
            for head in self.heads:
                head.write(chunk)
