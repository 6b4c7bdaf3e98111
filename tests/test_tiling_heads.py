"""The output head contract (``tiling.outputs.OutputHead``) and how a run ends: commit, abort or suspend.

The abstract base declares write/commit/abort and gives a head that cannot resume its defaults; the run loop uses
the members directly. Whatever stops a run — an error, a cancel, KeyboardInterrupt or SystemExit — the reader's
thread is stopped and the heads are aborted (or suspended, when they can resume): no output file is left.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from deepraster.tiling.blend import Chunk
from deepraster.tiling.engine import TiledRun, keeps_partial_result
from deepraster.tiling.errors import ExtentError, OutputError, RasterInputError, RunCancelled
from deepraster.tiling.grid import TileGrid
from deepraster.tiling.outputs import ClassHead, ClassInfo, FeatureHead, GeoTiffHead, OutputHead, ProbabilityHead
from deepraster.tiling.pixelwise import PixelOutput, map_pixels
from deepraster.tiling.predictor import TorchPredictor
from deepraster.tiling.reader import InputTransform, StripReader
from deepraster.tiling.source import RasterSource
from helpers import smooth_field
from osgeo import gdal

TRANSFORM = InputTransform(bands=(1, 2, 3, 4), scale=1e-4, shift=(0.2,) * 4, divisor=(0.1,) * 4)
CPU = torch.device("cpu")


class RecordingHead(OutputHead):
    """A test double with only the abstract members: it records the rows it gets and what the run called."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, int]] = []  # (row_off, rows, col_off) of each chunk
        self.calls: list[str] = []

    def write(self, chunk: Chunk) -> None:
        self.rows.append((chunk.row_off, chunk.valid.shape[0], chunk.col_off))

    def commit(self) -> Path:
        self.calls.append("commit")
        return Path("recorded")

    def abort(self) -> None:
        self.calls.append("abort")


def test_output_head_is_abstract_with_write_commit_abort() -> None:
    """Only write, commit and abort must be implemented; every head of the package is an OutputHead."""
    assert OutputHead.__abstractmethods__ == {"write", "commit", "abort"}
    with pytest.raises(TypeError):
        OutputHead()  # type: ignore[abstract]
    for head in (ProbabilityHead, ClassHead, FeatureHead):
        assert issubclass(head, GeoTiffHead) and issubclass(head, OutputHead)


def test_output_head_defaults_describe_a_head_that_cannot_resume() -> None:
    """Defaults: starts fresh (column 0, row 0), 256-pixel blocks, and ``suspend`` keeps nothing: it aborts."""
    head = RecordingHead()
    assert (head.resumed_col, head.resumed_rows, head.block_size) == (0, 0, 256)
    assert head.suspend() is False
    assert head.calls == ["abort"]


def _run(path: Path, heads: list[OutputHead], model: torch.nn.Module, channels: int = 3, stride: int = 1,
         tile: int = 64) -> TiledRun:
    src = RasterSource.open(str(path))
    grid = TileGrid(src.window, tile, 16, align=stride)
    return TiledRun(grid, StripReader(src, grid, TRANSFORM), TorchPredictor(model, CPU, "none"), channels, heads,
                    batch_size=1, output_stride=stride, batches_within_rows=True)


def test_run_uses_the_defaults_of_a_minimal_head(make_raster: Callable[..., Path]) -> None:
    """A head with only the abstract members gets every row once, in order, and is committed."""
    head = RecordingHead()
    stats = _run(make_raster("in.tif", smooth_field(4, 150, 90)), [head], torch.nn.Conv2d(4, 3, 1)).run()
    assert head.calls == ["commit"] and stats.outputs == [Path("recorded")]
    starts = [r for r, _, _ in head.rows]
    assert starts == sorted(starts) and starts[0] == 0 and sum(n for _, n, _ in head.rows) == 150


class Interrupting(torch.nn.Module):
    """Pooling by ``stride`` and a 1×1 conv; raises ``error`` on its ``at``-th call (never when None)."""

    def __init__(self, error: BaseException | None = None, at: int | None = None, channels: int = 3,
                 stride: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Sequential(torch.nn.AvgPool2d(stride), torch.nn.Conv2d(4, channels, 1))
        self.error, self.at, self.calls = error, at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            raise self.error
        return self.conv(x)


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "deepraster-reader" and t.is_alive()]


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(1)], ids=["KeyboardInterrupt", "SystemExit"])
def test_interrupted_run_leaves_no_output_file(make_raster: Callable[..., Path], tmp_path: Path,
                                               error: BaseException) -> None:
    """KeyboardInterrupt (or SystemExit) inside predict propagates unchanged; heads that cannot resume are
    aborted (no file, not even a temporary one), an older file at the output path is kept, the reader stops."""
    path = make_raster("in.tif", smooth_field(4, 300, 120))
    out = tmp_path / "out"
    out.mkdir()
    (out / "class.tif").write_bytes(b"older result")
    src = RasterSource.open(str(path))
    classes = [ClassInfo(i, f"c{i}", (i, i, i)) for i in range(3)]
    recording = RecordingHead()
    heads = [ProbabilityHead(str(out / "prob.tif"), src, src.window, ["a", "b", "c"], percent=False),
             ClassHead(str(out / "class.tif"), src, src.window, classes), recording]
    model = Interrupting(error, at=12)  # 3 tiles a row: rows were released and written before
    with pytest.raises(type(error)):
        _run(path, heads, model).run()
    assert model.calls == 12
    assert sorted(p.name for p in out.iterdir()) == ["class.tif"]
    assert (out / "class.tif").read_bytes() == b"older result"
    assert recording.rows and recording.calls == ["abort"]  # suspended: the default suspend aborts
    assert not _reader_threads()


def test_interrupted_resumable_run_keeps_its_partial_result(make_raster: Callable[..., Path],
                                                            tmp_path: Path) -> None:
    """A KeyboardInterrupt is not the user's input error: a resumable head keeps what it wrote, and the same run
    continues from there to the uninterrupted result."""
    path = make_raster("in.tif", smooth_field(4, 400, 150, seed=7))
    src = RasterSource.open(str(path))
    key = "k" * 64

    def head(name: str) -> FeatureHead:
        return FeatureHead(str(tmp_path / name), src, src.window, 8, ["a", "b"], resume_key=key, block_size=16)

    _run(path, [head("ref.tif")], Interrupting(channels=2, stride=8), 2, 8).run()
    with pytest.raises(KeyboardInterrupt):
        _run(path, [head("f.tif")], Interrupting(KeyboardInterrupt(), at=12, channels=2, stride=8), 2, 8).run()
    state = json.loads((tmp_path / ".f.tif.resume.json").read_text())
    assert state["rows_done"] >= 16 and not (tmp_path / "f.tif").exists()
    resumed = _run(path, [head("f.tif")], Interrupting(channels=2, stride=8), 2, 8).run()
    assert resumed.rows_resumed == state["rows_done"] and resumed.tiles_predicted < resumed.tiles_total
    ref, got = (gdal.Open(str(tmp_path / name)).ReadAsArray() for name in ("ref.tif", "f.tif"))
    np.testing.assert_array_equal(ref, got)
    assert not _reader_threads()


@pytest.mark.parametrize(("error", "keep"), [
    (RunCancelled("stop"), True), (KeyboardInterrupt(), True), (SystemExit(1), True), (MemoryError(), True),
    (RuntimeError("bug"), True), (RasterInputError("no valid pixel"), False), (OutputError("disk full"), False),
    (ExtentError("outside"), False),
])
def test_what_a_stopped_run_keeps(error: BaseException, keep: bool) -> None:
    """Resumable heads keep their partial result after a cancel or an unexpected failure, not after an error the
    same run would meet again."""
    assert keeps_partial_result(error) is keep


def test_map_pixels_interrupted_leaves_no_output_file(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    """The per-pixel loop, interrupted inside its function after some windows, removes every output."""
    path = make_raster("in.tif", smooth_field(2, 200, 100))
    out = tmp_path / "out"
    out.mkdir()
    calls = [0]

    def fn(pixels: np.ndarray) -> np.ndarray:
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return pixels[:, :1]

    outputs = [PixelOutput(str(out / "a.tif"), 1, np.float32, float("nan")),
               PixelOutput(str(out / "b.tif"), 1, np.float32, float("nan"))]
    with pytest.raises(KeyboardInterrupt):
        map_pixels(RasterSource.open(str(path)), [1, 2], lambda px: [fn(px), px[:, 1:]], outputs,
                   budget_bytes=4000)
    assert calls[0] == 3 and list(out.iterdir()) == []
