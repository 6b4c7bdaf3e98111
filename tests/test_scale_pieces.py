"""Pieces of a run (``TiledRun(part=...)`` and :mod:`scale.pieces`): the pieces tile the output exactly, in the
order the writers need, and each piece computed alone equals the same window of the whole run, across panels and
row bands (no Dask needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from deepraster.scale.pieces import piece_rows, plan_pieces
from deepraster.tiling.engine import TiledRun
from deepraster.tiling.grid import TileGrid
from deepraster.tiling.outputs import ProbabilityHead
from deepraster.tiling.panels import plan_panels
from deepraster.tiling.predictor import TorchPredictor
from deepraster.tiling.reader import StripReader
from deepraster.tiling.source import RasterSource
from deepraster.tiling.window import Window
from helpers import smooth_field
from osgeo import gdal
from test_engine import CPU, NAMES, TRANSFORM, conv_model, read


@pytest.mark.parametrize(("rows", "cols", "tile", "overlap", "rows_per_piece"),
                         [(700, 900, 64, 16, 256), (300, 2000, 128, 40, 512), (513, 257, 96, 0, 256)])
def test_pieces_tile_the_output_in_writer_order(rows, cols, tile, overlap, rows_per_piece):
    grid = TileGrid(Window(0, 0, cols, rows), tile, overlap)
    parts = plan_pieces(grid, 1, 256, rows_per_piece, panel_width=1024)
    cover = np.zeros((rows, cols), np.int32)
    for part in parts:
        cover[part.slices()] += 1
    assert (cover == 1).all()
    panels = [(p.col_off, p.col_end) for p in plan_panels(grid, 1, 256, 1024)]
    assert sorted({(p.col_off, p.col_end) for p in parts}) == panels  # the in-process run's panels
    order = [(panels.index((p.col_off, p.col_end)), p.row_off) for p in parts]
    assert order == sorted(order)  # panel by panel, each from the top
    assert all(p.height % 256 == 0 or p.row_end == rows for p in parts)


def test_piece_rows_are_blocks_and_at_least_eight_tiles():
    grid = TileGrid(Window(0, 0, 20000, 20000), 256, 52)
    assert piece_rows(grid, 1, 2, 256) == 4096  # about two pieces per worker (5000), at most 4096 rows
    assert piece_rows(TileGrid(Window(0, 0, 5000, 5000), 256, 52), 1, 2, 256) == 2048  # 1250, at least 8 tiles
    assert piece_rows(TileGrid(Window(0, 0, 9000, 9000), 256, 52), 1, 2, 256) == 2304
    assert piece_rows(grid, 1, 64, 256) == 2048  # never under 8 tiles of 256 px
    assert piece_rows(TileGrid(Window(0, 0, 100, 100), 64, 0), 1, 1, 256) == 512


def _run(path: Path, out: Path, part: Window | None, panel_width: int) -> np.ndarray:
    src = RasterSource.open(str(path))
    grid = TileGrid(src.window, 64, 24, offset=(10, 10))
    window = src.window if part is None else part
    head = ProbabilityHead(str(out), src, window, NAMES, percent=False)
    TiledRun(grid, StripReader(src, grid, TRANSFORM), TorchPredictor(conv_model(5), CPU, "softmax"), 3, [head],
             batch_size=3, panel_width=panel_width, part=part).run()
    return read(out)[0]


def test_each_piece_equals_its_window_of_the_whole_run(make_raster, tmp_path):
    path = make_raster("in.tif", smooth_field(4, 700, 1100, seed=3), nodata=0)
    ds = gdal.Open(str(path), gdal.GA_Update)  # a nodata hole across a piece edge
    ds.GetRasterBand(1).WriteArray(np.zeros((80, 90), np.uint16), 500, 230)
    ds = None
    whole = _run(path, tmp_path / "whole.tif", None, panel_width=512)
    grid = TileGrid(Window(0, 0, 1100, 700), 64, 24, offset=(10, 10))
    parts = plan_pieces(grid, 1, 256, 256, panel_width=512)
    assert len({p.col_off for p in parts}) > 1 and len({p.row_off for p in parts}) > 1
    stitched = np.full_like(whole, -1.0)
    for i, part in enumerate(parts):
        stitched[(slice(None), *part.slices())] = _run(path, tmp_path / f"p{i}.tif", part, panel_width=512)
    np.testing.assert_array_equal(stitched, whole)  # bit for bit, NaN (nodata) included


def test_a_piece_reads_only_the_columns_of_its_tiles(make_raster, tmp_path, monkeypatch):
    """A piece's strips span its panel's tiles, not the raster's width (they did: a worker's memory and reading
    grew with the raster's width)."""
    from deepraster.tiling.panels import panel_of

    path = make_raster("in.tif", smooth_field(4, 200, 1100, seed=2))
    widths: list[int] = []
    read_strip = StripReader.read_strip

    def recording(self, ds, row):
        strip = read_strip(self, ds, row)
        widths.append(strip.window.width)
        return strip

    monkeypatch.setattr(StripReader, "read_strip", recording)
    part = Window(256, 0, 256, 128)
    _run(path, tmp_path / "p.tif", part, panel_width=512)
    tiles = panel_of(TileGrid(Window(0, 0, 1100, 200), 64, 24, offset=(10, 10)), 256, 512).grid
    footprint = tiles.col_starts[-1] + tiles.tile_size - tiles.col_starts[0]
    assert widths and max(widths) <= footprint < 400


def test_piece_rasters_are_georeferenced_as_their_window(make_raster, tmp_path):
    path = make_raster("in.tif", smooth_field(4, 300, 400, seed=1))
    part = Window(0, 256, 400, 44)
    _run(path, tmp_path / "p.tif", part, panel_width=1024)
    gt = gdal.Open(str(path)).GetGeoTransform()
    piece = gdal.Open(str(tmp_path / "p.tif"))
    assert (piece.RasterXSize, piece.RasterYSize) == (400, 44)
    assert piece.GetGeoTransform() == pytest.approx((gt[0], gt[1], 0.0, gt[3] + 256 * gt[5], 0.0, gt[5]))


def _run_strided(path: Path, out: Path, part: Window | None) -> np.ndarray:
    """A stride-4 "encoder" (one 4 × 4 convolution with stride 4) through FeatureHeads, as Extract features runs."""
    import torch
    from deepraster.tiling.outputs import FeatureHead

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.Conv2d(6, 5, 4, stride=4))
    src = RasterSource.open(str(path))
    region = src.window
    grid = TileGrid(region, 64, 16, align=4)
    if part is None:
        window = region
    else:
        c0, r0 = part.col_off * 4, part.row_off * 4
        window = Window(c0, r0, min(part.width * 4, region.col_end - c0), min(part.height * 4, region.row_end - r0))
    head = FeatureHead(str(out), src, window, 4, [f"f{i}" for i in range(5)], block_size=16)
    TiledRun(grid, StripReader(src, grid, TRANSFORM), TorchPredictor(model, CPU, "none"), 5, [head], batch_size=2,
             output_stride=4, batches_within_rows=True, panel_width=256, part=part).run()
    return read(out)[0]


def test_strided_pieces_equal_the_whole_feature_run(make_raster, tmp_path):
    path = make_raster("in.tif", smooth_field(4, 301, 1500, seed=5), nodata=0)
    whole = _run_strided(path, tmp_path / "whole.tif", None)
    grid = TileGrid(Window(0, 0, 1500, 301), 64, 16, align=4)
    parts = plan_pieces(grid, 4, 16, 32, panel_width=256)
    assert len({p.col_off for p in parts}) > 1 and len({p.row_off for p in parts}) > 1
    stitched = np.full_like(whole, -1.0)
    for i, part in enumerate(parts):
        stitched[(slice(None), *part.slices())] = _run_strided(path, tmp_path / f"p{i}.tif", part)
    np.testing.assert_array_equal(stitched, whole)


def test_a_failed_piece_drops_the_workers_model(monkeypatch, tmp_path):
    """An ONNX Runtime session that cannot be made fails at the piece's first batch; the worker then keeps no model,
    so the piece's retry (or the next piece) makes it again instead of failing on the same broken one."""
    from types import SimpleNamespace

    import deepraster.scale.worker as worker
    from deepraster.tiling.errors import DeepRasterError

    def failing_run(*args, **kwargs):
        raise DeepRasterError("ONNX Runtime cannot load model.onnx")

    monkeypatch.setitem(worker._PREDICTORS, ("classify", "model"), object())
    monkeypatch.setattr(worker, "cached_predictor", lambda plan, threads: worker._PREDICTORS[("classify", "model")])
    monkeypatch.setattr(worker, "classification_run", failing_run)
    with pytest.raises(DeepRasterError, match="cannot load"):
        worker.classify_piece(SimpleNamespace(outputs={"classes": "c.tif"}), Window(0, 0, 8, 8), str(tmp_path))
    assert worker._PREDICTORS == {}
