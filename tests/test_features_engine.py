"""The engine with an output stride (feature extraction), on generated rasters, with tiny torch models.

What is proved (the aligned grid and the strided blender on their own: tests/test_grid.py, test_tiling_blend.py):
the feature raster has ceil(region / stride) pixels, the region's origin, stride × the pixel size and the CRS;
a model without spatial context gives exactly the untiled result; outputs stream with bounded buffers; checkpoints
let a cancelled run continue to a result identical to an uninterrupted run; float16, statistics, disk check, pause.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from deepraster.tiling.callbacks import Callbacks
from deepraster.tiling.engine import TiledRun
from deepraster.tiling.errors import DeepRasterError, OutputError, RasterInputError, RunCancelled
from deepraster.tiling.grid import TileGrid, output_shape
from deepraster.tiling.outputs import FeatureHead, feature_block_size
from deepraster.tiling.panels import DEFAULT_PANEL_WIDTH
from deepraster.tiling.predictor import TorchPredictor
from deepraster.tiling.reader import InputTransform, StripReader
from deepraster.tiling.source import RasterSource, sample_pixels
from deepraster.tiling.window import Window, strided_geotransform, window_geotransform
from helpers import smooth_field
from osgeo import gdal

gdal.UseExceptions()

GT = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)
TRANSFORM = InputTransform(bands=(1, 2, 3, 4), scale=1e-4, shift=(0.2,) * 4, divisor=(0.1,) * 4)
CPU = torch.device("cpu")


class PoolFeatures(torch.nn.Module):
    """A feature model without spatial context beyond its own s × s cell: average pooling by ``s`` then a fixed
    1×1 convolution to ``channels`` features. Tiled over an aligned grid it must equal the untiled result."""

    def __init__(self, stride: int, channels: int = 5, bands: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.pool = torch.nn.AvgPool2d(stride)
        self.conv = torch.nn.Conv2d(bands, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


def reference(model: torch.nn.Module, raw: np.ndarray, stride: int) -> np.ndarray:
    """The model on the whole raster, reflect-padded to a multiple of the stride as the reader pads."""
    x = TRANSFORM.apply(raw)
    rows, cols = output_shape(Window(0, 0, raw.shape[2], raw.shape[1]), stride)
    x = np.pad(x, ((0, 0), (0, rows * stride - x.shape[1]), (0, cols * stride - x.shape[2])), mode="reflect")
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(x[None]))[0].numpy()


def run_features(path: Path, out: Path, model: torch.nn.Module, stride: int, *, tile: int = 64, overlap: int = 16,
                 region: Window | None = None, channels: int = 5, batch_size: int = 3, callbacks=None,
                 resume_key: str | None = None, block: int | None = None, half: bool = False, pause_s: float = 0.0,
                 within_rows: bool = True, panel_width: int = DEFAULT_PANEL_WIDTH):
    src = RasterSource.open(str(path))
    region = region or src.window
    grid = TileGrid(region, tile, overlap, align=stride)
    head = FeatureHead(str(out), src, region, stride, [f"feature {i + 1}" for i in range(channels)], half=half,
                       resume_key=resume_key, block_size=block, metadata={"DEEPRASTER_OUTPUT_STRIDE": str(stride)})
    run = TiledRun(grid, StripReader(src, grid, TRANSFORM), TorchPredictor(model, CPU, "none"), channels, [head],
                   batch_size=batch_size, callbacks=callbacks, output_stride=stride, batches_within_rows=within_rows,
                   pause_s=pause_s, panel_width=panel_width)
    return run.run()


def read(path: Path) -> tuple[np.ndarray, gdal.Dataset]:
    ds = gdal.Open(str(path))
    return ds.ReadAsArray().reshape(ds.RasterCount, ds.RasterYSize, ds.RasterXSize), ds


# --------------------------------------------------------------------------------------------------- engine


@pytest.mark.parametrize(("stride", "tile", "overlap", "size"), [
    (8, 64, 16, (203, 157)), (16, 64, 32, (300, 170)), (4, 32, 0, (97, 61)), (16, 64, 16, (40, 30)),
])
def test_pointwise_feature_model_tiling_is_invisible(make_raster: Callable[..., Path], tmp_path: Path, stride: int,
                                                      tile: int, overlap: int, size: tuple[int, int]) -> None:
    """A model whose output pixel depends only on its own s × s input cell gives, tiled, exactly the untiled result
    (≤ 1e-5) at every output pixel, for rasters that are not multiples of the stride or smaller than a tile; the
    raster has ceil(size / s) pixels, the input's origin, s × its pixel size, its CRS, one band per feature."""
    cols, rows = size
    raw = smooth_field(4, rows, cols, seed=3)
    path = make_raster("in.tif", raw)
    model = PoolFeatures(stride)
    stats = run_features(path, tmp_path / "f.tif", model, stride, tile=tile, overlap=overlap)
    out, ds = read(tmp_path / "f.tif")
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (-(-cols // stride), -(-rows // stride), 5)
    assert ds.GetGeoTransform() == (GT[0], GT[1] * stride, 0.0, GT[3], 0.0, GT[5] * stride)
    assert ds.GetSpatialRef().IsSame(gdal.Open(str(path)).GetSpatialRef())
    assert ds.GetRasterBand(3).GetDescription() == "feature 3"
    assert ds.GetMetadataItem("DEEPRASTER_OUTPUT_STRIDE") == str(stride)
    np.testing.assert_allclose(out, reference(model, raw, stride), rtol=0, atol=1e-5)
    assert stats.tiles_predicted == stats.tiles_total


def test_region_output_is_georeferenced_at_region_origin(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    """A sub-window: output origin at the region's corner, pixel size × stride, values equal to the full run's
    over the region when the region origin is on the full run's output grid."""
    raw = smooth_field(4, 200, 240, seed=5)
    path = make_raster("in.tif", raw)
    model = PoolFeatures(8)
    region = Window(48, 32, 120, 100)  # multiples of 8: the same output cells as the full run
    run_features(path, tmp_path / "full.tif", model, 8)
    run_features(path, tmp_path / "part.tif", model, 8, region=region)
    full, _ = read(tmp_path / "full.tif")
    part, ds = read(tmp_path / "part.tif")
    assert part.shape == (5, 13, 15)
    assert ds.GetGeoTransform() == (GT[0] + 480.0, 80.0, 0.0, GT[3] - 320.0, 0.0, -80.0)
    assert strided_geotransform(window_geotransform(GT, region), 8) == ds.GetGeoTransform()
    np.testing.assert_allclose(part, full[:, 4:17, 6:21], atol=1e-5)  # the last row reads real pixels below


def test_nodata_at_output_resolution(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    """Nodata input cells come out NaN (all bands), mostly-valid cells keep their features; an all-nodata raster
    fails with a clear message and leaves no file."""
    raw = smooth_field(4, 128, 128, seed=6)
    raw[raw == 0] = 1
    raw[:, 16:32, 16:32] = 0  # output cells (2..3, 2..3) at stride 8
    raw[:, 64:67, 64:72] = 0  # 3 of 8 rows of cell (8, 8): still valid
    path = make_raster("in.tif", raw, nodata=0)
    run_features(path, tmp_path / "f.tif", PoolFeatures(8), 8)
    out, ds = read(tmp_path / "f.tif")
    nan = np.isnan(out)
    assert (nan.all(axis=0) == nan.any(axis=0)).all()
    expected = np.zeros((16, 16), bool)
    expected[2:4, 2:4] = True
    np.testing.assert_array_equal(nan[0], expected)
    assert np.isnan(ds.GetRasterBand(1).GetNoDataValue())
    empty = make_raster("empty.tif", np.zeros((4, 64, 64), np.uint16), nodata=0)
    with pytest.raises(RasterInputError, match="no valid pixel"):
        run_features(empty, tmp_path / "e.tif", PoolFeatures(8), 8, resume_key="k" * 64)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".e.tif", "e.tif"))) == []


def test_wrong_output_size_is_explained(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    """A model whose output does not match the declared stride fails with a message naming both shapes."""
    path = make_raster("in.tif", smooth_field(4, 64, 64))
    with pytest.raises(DeepRasterError, match=r"expected \(1, channels, 4, 4\)"):
        run_features(path, tmp_path / "f.tif", PoolFeatures(8), 16, tile=64, overlap=0)
    assert not any(tmp_path.glob("*f.tif*"))


# --------------------------------------------------------------------------------------------------- resume


def _cancel_after(polls: int) -> Callbacks:
    count = [0]

    def cancelled() -> bool:
        count[0] += 1
        return count[0] > polls

    return Callbacks(is_cancelled=cancelled)


def test_cancelled_run_resumes_to_identical_result(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    """Cancel mid-way: the partial file and a state are kept; the same parameters continue from the checkpoint
    (fewer tiles predicted) and give exactly the uninterrupted result, statistics included; files cleaned up."""
    raw = smooth_field(4, 400, 150, seed=7)
    path = make_raster("in.tif", raw)
    model = PoolFeatures(8, seed=1)
    key = "a" * 64
    full = run_features(path, tmp_path / "ref.tif", model, 8, block=16, resume_key=key)
    with pytest.raises(RunCancelled):
        run_features(path, tmp_path / "f.tif", model, 8, block=16, resume_key=key, callbacks=_cancel_after(12))
    state = json.loads((tmp_path / ".f.tif.resume.json").read_text())
    assert state["rows_done"] >= 16 and state["key"] == key
    assert (tmp_path / state["temp"]).is_file() and not (tmp_path / "f.tif").exists()
    resumed = run_features(path, tmp_path / "f.tif", model, 8, block=16, resume_key=key)
    assert resumed.rows_resumed == state["rows_done"]
    assert resumed.tiles_predicted < full.tiles_predicted
    a, da = read(tmp_path / "ref.tif")
    b, db = read(tmp_path / "f.tif")
    np.testing.assert_array_equal(a, b)
    for i in (1, 5):
        assert da.GetRasterBand(i).GetStatistics(False, False) == db.GetRasterBand(i).GetStatistics(False, False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.tif", "in.tif", "ref.tif"]


def test_panels_and_resume_across_a_panel_edge(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    """Feature outputs in column panels equal the run without panels; a run cancelled in the second panel keeps
    the first and continues there, to a result identical to the uninterrupted one."""
    raw = smooth_field(4, 120, 1500, seed=11)
    path = make_raster("in.tif", raw)
    model, key = PoolFeatures(4, seed=3), "c" * 64
    whole = run_features(path, tmp_path / "whole.tif", model, 4, block=16)
    panels = run_features(path, tmp_path / "panels.tif", model, 4, block=16, panel_width=0)
    assert (whole.panels, panels.panels) == (1, 2)
    a, _ = read(tmp_path / "panels.tif")
    np.testing.assert_allclose(a, read(tmp_path / "whole.tif")[0], rtol=0, atol=1e-6)  # batches differ: rounding

    progress = [0.0]

    def late_cancel() -> bool:
        return progress[0] > 0.8

    callbacks = Callbacks(progress=lambda f: progress.__setitem__(0, f), is_cancelled=late_cancel)
    with pytest.raises(RunCancelled):
        run_features(path, tmp_path / "f.tif", model, 4, block=16, panel_width=0, resume_key=key, callbacks=callbacks)
    state = json.loads((tmp_path / ".f.tif.resume.json").read_text())
    assert state["col_off"] == 192  # the first panel (192 output columns) is kept
    resumed = run_features(path, tmp_path / "f.tif", model, 4, block=16, panel_width=0, resume_key=key)
    assert resumed.tiles_resumed >= panels.tiles_total / 2 and resumed.tiles_predicted <= panels.tiles_total / 2
    np.testing.assert_array_equal(read(tmp_path / "f.tif")[0], a)
    assert not (tmp_path / ".f.tif.resume.json").exists()


def test_other_parameters_start_fresh_and_remove_old_partial(make_raster: Callable[..., Path],
                                                             tmp_path: Path) -> None:
    """A checkpoint of another parameter set (another key) is discarded, its temporary file removed."""
    path = make_raster("in.tif", smooth_field(4, 300, 100, seed=8))
    with pytest.raises(RunCancelled):
        run_features(path, tmp_path / "f.tif", PoolFeatures(8), 8, block=16, resume_key="a" * 64,
                     callbacks=_cancel_after(6))
    old = json.loads((tmp_path / ".f.tif.resume.json").read_text())["temp"]
    stats = run_features(path, tmp_path / "f.tif", PoolFeatures(8, seed=2), 8, block=16, resume_key="b" * 64)
    assert stats.rows_resumed == 0 and stats.tiles_predicted == stats.tiles_total
    assert not (tmp_path / old).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.tif", "in.tif"]


def test_error_discards_checkpoint(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    """A user-fixable error (here a model of the wrong stride) removes the checkpoint: nothing to resume."""
    path = make_raster("in.tif", smooth_field(4, 64, 64))
    with pytest.raises(DeepRasterError):
        run_features(path, tmp_path / "f.tif", PoolFeatures(8), 16, tile=64, overlap=0, resume_key="c" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


# --------------------------------------------------------------------------------------------------- output


def test_float16_output_statistics_and_block_size(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    """float16 storage holds the float32 result rounded to half floats exactly (lossless DEFLATE), with band
    statistics stored; block rows stay within 32 MB for wide, deep feature rasters."""
    raw = smooth_field(4, 120, 90, seed=9)
    path = make_raster("in.tif", raw)
    run_features(path, tmp_path / "f32.tif", PoolFeatures(4), 4)
    run_features(path, tmp_path / "f16.tif", PoolFeatures(4), 4, half=True)
    a, _ = read(tmp_path / "f32.tif")
    b, ds = read(tmp_path / "f16.tif")
    np.testing.assert_array_equal(b, a.astype(np.float16).astype(np.float32))
    info = gdal.Info(str(tmp_path / "f16.tif"), format="json")
    assert info["bands"][0]["metadata"]["IMAGE_STRUCTURE"]["NBITS"] == "16"
    assert ds.GetMetadata("IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
    lo, hi, mean, std = ds.GetRasterBand(2).GetStatistics(False, False)
    assert (lo, hi) == (float(b[1].min()), float(b[1].max()))
    assert mean == pytest.approx(float(b[1].astype(np.float64).mean()), rel=1e-9)
    assert std == pytest.approx(float(b[1].astype(np.float64).std()), rel=1e-6)
    assert feature_block_size(1250, 768, 4) == 16 and feature_block_size(100, 56, 4) == 256


def test_disk_space_is_checked_before_starting(make_raster: Callable[..., Path], tmp_path: Path, monkeypatch,
                                               s2_10m: Path, model_6b_l1c: Path) -> None:
    """Not enough free space for the uncompressed output: a clear error before any file is written."""
    from deepraster.models.feature_extraction import FeatureRequest, extract_features
    from deepraster.models.package import load_package

    class Usage:
        free = 100_000

    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage())
    request = FeatureRequest(raster=str(s2_10m), output=str(tmp_path / "f.tif"), package=load_package(model_6b_l1c),
                             stride=8, device="cpu")
    with pytest.raises(OutputError, match=r"Not enough disk space: .*192 × 96 px × 56 bands × 4 bytes"):
        extract_features(request)
    assert list(tmp_path.iterdir()) == []


def test_pause_between_batches_and_cancel_during_pause(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    """A pause after each batch slows the run; a cancel during a pause stops it within about 0.1 s."""
    path = make_raster("in.tif", smooth_field(4, 64, 64))
    start = time.perf_counter()
    stats = run_features(path, tmp_path / "a.tif", PoolFeatures(8), 8, tile=32, overlap=0, batch_size=4,
                         pause_s=0.2)
    assert stats.batches == 2 and time.perf_counter() - start >= 0.4  # batches stay within a grid row
    polls = [0]

    def cancel_in_first_pause() -> bool:
        polls[0] += 1
        return polls[0] > 3

    start = time.perf_counter()
    with pytest.raises(RunCancelled):
        run_features(path, tmp_path / "b.tif", PoolFeatures(8), 8, tile=32, overlap=0, batch_size=4, pause_s=30,
                     callbacks=Callbacks(is_cancelled=cancel_in_first_pause))
    assert time.perf_counter() - start < 5


# --------------------------------------------------------------------------------------------------- reader


def test_mix_transform_and_sample(make_raster: Callable[..., Path]) -> None:
    """The mixing matrix (PCA) is applied after the per-band normalisation; the sample leaves nodata out and is
    the same on every call."""
    raw = smooth_field(3, 50, 40, seed=10)
    raw[:, :5, :] = 0
    t = InputTransform(bands=(1, 2, 3), scale=1e-4, shift=(0.1, 0.2, 0.3), divisor=(0.5, 0.5, 0.5),
                       mix=((1.0, 0.0, -1.0), (0.5, 0.5, 0.0)), mix_offset=(1.0, 0.0))
    assert t.channels == 2
    z = (raw.astype(np.float32) * 1e-4 - np.array([0.1, 0.2, 0.3], np.float32)[:, None, None]) / 0.5
    np.testing.assert_allclose(t.apply(raw), np.stack([z[0] - z[2] + 1.0, 0.5 * z[0] + 0.5 * z[1]]), atol=1e-5)
    src = RasterSource.open(str(make_raster("s.tif", raw, nodata=0)))
    sample = sample_pixels(src, (1, 3), size=20)
    assert sample.shape[0] == 2 and 0 < sample.shape[1] < 400 and (sample > 0).all()
    np.testing.assert_array_equal(sample, sample_pixels(src, (1, 3), size=20))
