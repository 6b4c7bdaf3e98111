"""End-to-end tests of ``tiling.engine.TiledRun`` with tiny torch models on generated rasters.

They prove the engine contract of docs/architecture.md: outputs have the input's size and georeferencing, no
zero or nodata borders, the tiling is invisible (exactly so for a model without spatial context, up to the model's
own padding otherwise), nodata is carried through, and cancelled or failed runs leave no file behind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from deepraster.tiling.callbacks import Callbacks
from deepraster.tiling.engine import RunStats, TiledRun
from deepraster.tiling.errors import RasterInputError, RunCancelled
from deepraster.tiling.grid import TileGrid
from deepraster.tiling.outputs import CLASS_NODATA, PERCENT_NODATA, ClassHead, ClassInfo, ProbabilityHead
from deepraster.tiling.panels import DEFAULT_PANEL_WIDTH
from deepraster.tiling.predictor import TorchPredictor
from deepraster.tiling.reader import InputTransform, StripReader
from deepraster.tiling.source import RasterSource
from deepraster.tiling.window import Window
from helpers import smooth_field
from osgeo import gdal

gdal.UseExceptions()

GT = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)
CLASSES = (ClassInfo(0, "clear", (200, 200, 200)), ClassInfo(2, "cloud", (255, 255, 255)),
           ClassInfo(5, "shadow", (40, 40, 40)))
NAMES = tuple(c.name for c in CLASSES)
TRANSFORM = InputTransform(bands=(1, 2, 3, 4), scale=1e-4, offset=0.0, shift=(0.2,) * 4, divisor=(0.1,) * 4)
CPU = torch.device("cpu")


def conv_model(kernel: int, seed: int = 0) -> torch.nn.Module:
    """A fixed-seed ``Conv2d(4, 3, kernel)`` with 'same' padding: kernel 1 has no spatial context."""
    torch.manual_seed(seed)
    return torch.nn.Conv2d(4, 3, kernel, padding=kernel // 2)


def reference(model: torch.nn.Module, raw: np.ndarray, transform: InputTransform = TRANSFORM) -> np.ndarray:
    """The model applied to the whole raster at once (no tiling), with softmax: (3, rows, cols) float32."""
    x = torch.from_numpy(transform.apply(raw[[b - 1 for b in transform.bands]])[None])
    with torch.inference_mode():
        return torch.softmax(model.eval()(x), dim=1)[0].numpy()


def run_engine(path: Path, out: Path, model: torch.nn.Module, *, tile: int = 64, overlap: int = 16,
               region: Window | None = None, transform: InputTransform = TRANSFORM, batch_size: int = 4,
               callbacks: Callbacks | None = None, percent: bool = True, blend: str = "hann",
               panel_width: int = DEFAULT_PANEL_WIDTH) -> RunStats:
    """One run writing ``prob.tif`` (float32), ``pct.tif`` (uint8 %, optional) and ``class.tif`` into ``out``."""
    out.mkdir(exist_ok=True)
    src = RasterSource.open(str(path))
    region = region or src.window
    grid = TileGrid(region, tile, overlap)
    reader = StripReader(src, grid, transform)
    heads: list = [ProbabilityHead(str(out / "prob.tif"), src, region, NAMES, percent=False),
                   ClassHead(str(out / "class.tif"), src, region, CLASSES)]
    if percent:
        heads.append(ProbabilityHead(str(out / "pct.tif"), src, region, NAMES, percent=True))
    run = TiledRun(grid, reader, TorchPredictor(model, CPU, "softmax"), 3, heads, batch_size=batch_size,
                   blend=blend, callbacks=callbacks, panel_width=panel_width)
    return run.run()


def read(path: Path) -> tuple[np.ndarray, gdal.Dataset]:
    ds = gdal.Open(str(path))
    return ds.ReadAsArray().reshape(ds.RasterCount, ds.RasterYSize, ds.RasterXSize), ds


def classes_of(prob: np.ndarray) -> np.ndarray:
    return np.array([c.value for c in CLASSES], np.uint8)[np.argmax(prob, axis=0)]


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------------------------------- (1) sizes


@pytest.mark.parametrize(("cols", "rows", "tile", "overlap"), [(1001, 777, 256, 32), (100, 60, 256, 32)])
def test_outputs_cover_the_raster_without_holes_or_zero_borders(make_raster: Callable[..., Path], tmp_path: Path,
                                                                cols: int, rows: int, tile: int,
                                                                overlap: int) -> None:
    """Outputs have the input size, geotransform and CRS; every pixel, borders included, holds a probability
    vector summing to 1 that matches the untiled model (3×3 conv) up to tile-edge padding effects of < 1e-3."""
    raw = smooth_field(4, rows, cols)
    path = make_raster("in.tif", raw)
    model = conv_model(3)
    stats = run_engine(path, tmp_path / "out", model, tile=tile, overlap=overlap)

    src = RasterSource.open(str(path))
    prob, ds = read(tmp_path / "out" / "prob.tif")
    cls, cds = read(tmp_path / "out" / "class.tif")
    for d in (ds, cds):
        assert (d.RasterXSize, d.RasterYSize) == (cols, rows)
        assert d.GetGeoTransform() == GT
        assert d.GetProjection() == src.projection
    assert prob.shape == (3, rows, cols)
    assert np.isfinite(prob).all()
    assert (cls != CLASS_NODATA).all()
    np.testing.assert_allclose(prob.sum(axis=0), 1.0, atol=1e-5)
    for border in (prob[:, 0, :], prob[:, -1, :], prob[:, :, 0], prob[:, :, -1]):
        assert border.min() > 0.0
    if rows >= tile:  # tiles start at the raster edge: the model's zero padding is the same as untiled
        expected = reference(model, raw)
    else:  # one tile, reflection-padded by the reader: the model sees reflected neighbours at the border
        expected = reference(torch.nn.Sequential(torch.nn.ReflectionPad2d(1), _unpadded(model)), raw)
    np.testing.assert_allclose(prob, expected, rtol=0, atol=1e-3)
    sure = np.sort(expected, axis=0)[-1] - np.sort(expected, axis=0)[-2] > 2e-3
    np.testing.assert_array_equal(cls[0][sure], classes_of(expected)[sure])
    assert stats.tiles_predicted == stats.tiles_total == len(TileGrid(src.window, tile, overlap))
    assert stats.tiles_skipped == 0
    assert stats.outputs == [tmp_path / "out" / n for n in ("prob.tif", "class.tif", "pct.tif")]


def _unpadded(model: torch.nn.Conv2d) -> torch.nn.Conv2d:
    """The same convolution without its zero padding."""
    conv = torch.nn.Conv2d(model.in_channels, model.out_channels, model.kernel_size, padding=0)
    conv.load_state_dict(model.state_dict())
    return conv


def test_class_raster_styling(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    """The class raster carries the class values, colours and names; probabilities carry band descriptions."""
    path = make_raster("in.tif", smooth_field(4, 40, 50))
    run_engine(path, tmp_path / "out", conv_model(1))
    info = gdal.Info(str(tmp_path / "out" / "class.tif"), format="json")["bands"][0]
    assert info["noDataValue"] == CLASS_NODATA
    assert info["categories"] == ["clear", "", "cloud", "", "", "shadow"]
    assert info["colorTable"]["entries"][5] == [40, 40, 40, 255]
    _, ds = read(tmp_path / "out" / "prob.tif")
    assert [ds.GetRasterBand(i + 1).GetDescription() for i in range(3)] == [f"probability of {n}" for n in NAMES]


# --------------------------------------------------------------------------------------------------- (2) invisibility


@pytest.mark.parametrize(("tile", "overlap", "blend"), [
    (64, 0, "hann"), (64, 16, "hann"), (64, 32, "hann"), (96, 0, "hann"), (96, 16, "hann"), (96, 32, "hann"),
    (96, 32, "centre_crop"),
])
def test_pointwise_model_tiling_is_invisible(make_raster: Callable[..., Path], tmp_path: Path, tile: int,
                                             overlap: int, blend: str) -> None:
    """A 1×1 conv (no spatial context) gives the same result tiled as on the whole raster (≤ 1e-5)."""
    raw = smooth_field(4, 157, 203, seed=1)
    model = conv_model(1)
    run_engine(make_raster("in.tif", raw), tmp_path / "out", model, tile=tile, overlap=overlap, batch_size=3,
               blend=blend)
    prob, _ = read(tmp_path / "out" / "prob.tif")
    expected = reference(model, raw)
    np.testing.assert_allclose(prob, expected, rtol=0, atol=1e-5)
    cls, _ = read(tmp_path / "out" / "class.tif")
    sure = np.sort(expected, axis=0)[-1] - np.sort(expected, axis=0)[-2] > 1e-4
    np.testing.assert_array_equal(cls[0][sure], classes_of(expected)[sure])
    assert sure.mean() > 0.99


# --------------------------------------------------------------------------------------------------- (3)–(4) nodata


def test_nodata_is_carried_and_empty_tiles_are_skipped(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    """Nodata pixels (a rectangle, one pixel nodata in a single band, a tile-sized block) are nodata in every
    output, all other pixels are valid and exact; tiles with no valid pixel are skipped and counted."""
    raw = smooth_field(4, 260, 300, seed=2)
    raw[raw == 0] = 1
    raw[:, 20:40, 200:250] = 0
    raw[2, 210, 15] = 0
    raw[:, 96:160, 96:160] = 0  # exactly the window of tile (2, 2) (tile 64, stride 48)
    nodata = (raw == 0).any(axis=0)
    path = make_raster("in.tif", raw, nodata=0)
    model = conv_model(1)
    stats = run_engine(path, tmp_path / "out", model)

    grid = TileGrid(Window(0, 0, 300, 260), 64, 16)
    empty = sum(bool(nodata[t.window.intersection(grid.region).slices()].all()) for t in grid)
    assert empty >= 1
    assert stats.tiles_skipped == empty
    assert stats.tiles_predicted == len(grid) - empty
    prob, _ = read(tmp_path / "out" / "prob.tif")
    cls, _ = read(tmp_path / "out" / "class.tif")
    pct, _ = read(tmp_path / "out" / "pct.tif")
    np.testing.assert_array_equal(np.isnan(prob).all(axis=0), nodata)
    assert not np.isnan(prob[:, ~nodata]).any()
    np.testing.assert_array_equal(cls[0] == CLASS_NODATA, nodata)
    np.testing.assert_array_equal((pct == PERCENT_NODATA).all(axis=0), nodata)
    expected = reference(model, raw)
    np.testing.assert_allclose(prob[:, ~nodata], expected[:, ~nodata], rtol=0, atol=1e-5)


def test_all_nodata_raster_fails_and_writes_nothing(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    """A raster with no valid pixel raises RasterInputError and leaves no output (nor partial) file."""
    path = make_raster("in.tif", np.zeros((4, 90, 70), np.uint16), nodata=0)
    with pytest.raises(RasterInputError, match="no valid pixel"):
        run_engine(path, tmp_path / "out", conv_model(1))
    assert files(tmp_path / "out") == []


# --------------------------------------------------------------------------------------------------- (5)–(6) failures


def test_cancel_leaves_no_output_and_keeps_older_file(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    """Cancelling (after the 2nd poll) raises RunCancelled at once, leaves no new or partial file and an older
    file at the output path intact."""
    path = make_raster("in.tif", smooth_field(4, 300, 200))
    out = tmp_path / "out"
    out.mkdir()
    (out / "prob.tif").write_bytes(b"older result")
    polls: list[int] = []

    def is_cancelled() -> bool:
        polls.append(1)
        return len(polls) > 2

    with pytest.raises(RunCancelled):
        run_engine(path, out, conv_model(3), batch_size=1, callbacks=Callbacks(is_cancelled=is_cancelled))
    assert len(polls) == 3  # stopped at the first poll that said "cancel"
    assert files(out) == ["prob.tif"]
    assert (out / "prob.tif").read_bytes() == b"older result"


class ExplodingModel(torch.nn.Module):
    """A 1×1 conv that raises on its ``fail_at``-th call, after earlier batches were blended and written."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.conv = conv_model(1)
        self.calls = 0
        self.fail_at = fail_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("model exploded")
        return self.conv(x)


def test_exception_in_predict_leaves_no_files(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    """An exception inside the model propagates unchanged and removes every partial output."""
    path = make_raster("in.tif", smooth_field(4, 300, 120))
    model = ExplodingModel(fail_at=12)  # tile 64 / stride 48: 3 tiles a row, so rows were released before
    with pytest.raises(RuntimeError, match="model exploded"):
        run_engine(path, tmp_path / "out", model, batch_size=1)
    assert model.calls == 12
    assert files(tmp_path / "out") == []


def test_a_stop_during_the_runs_set_up_leaves_no_files(make_raster: Callable[..., Path], tmp_path: Path,
                                                       monkeypatch) -> None:
    """A SIGTERM (RunCancelled) that lands after the outputs were opened but before the run loop began (here while
    the allocator is tuned) still removes every partial output."""
    import contextlib

    import deepraster.tiling.engine as engine
    from deepraster.tiling.errors import RunCancelled

    @contextlib.contextmanager
    def stopped_on_entry():
        raise RunCancelled("The run was stopped (SIGTERM)")
        yield

    monkeypatch.setattr(engine, "freed_memory_kept", stopped_on_entry)
    path = make_raster("in.tif", smooth_field(4, 100, 80))
    with pytest.raises(RunCancelled):
        run_engine(path, tmp_path / "out", conv_model(1))
    assert files(tmp_path / "out") == []


def test_progress_reaches_one_and_is_monotonic(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    """Progress fractions rise monotonically from 0 to exactly 1."""
    seen: list[float] = []
    run_engine(make_raster("in.tif", smooth_field(4, 150, 130)), tmp_path / "out", conv_model(1),
               callbacks=Callbacks(progress=seen.append))
    assert seen[-1] == 1.0
    assert all(0.0 <= a <= b <= 1.0 for a, b in zip(seen, seen[1:], strict=False))


# --------------------------------------------------------------------------------------------------- (7)–(8) types


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_float32_and_int16_inputs(make_raster: Callable[..., Path], tmp_path: Path, dtype: str) -> None:
    """Float32 (with NaN holes, no nodata value) and signed int16 (negative values) inputs give exact outputs;
    NaN pixels come out as nodata."""
    field = smooth_field(4, 90, 110, dtype=np.float32, seed=4)
    if dtype == "float32":
        raw = field / 10000.0
        raw[:, 10:13, 20:25] = np.nan
        transform = InputTransform(bands=(1, 2, 3, 4), shift=(0.2,) * 4, divisor=(0.1,) * 4)
    else:
        raw = (field - 2000.0).astype(np.int16)  # −1500 … 1500
        transform = InputTransform(bands=(1, 2, 3, 4), scale=1e-3, divisor=(0.5,) * 4)
    model = conv_model(1)
    run_engine(make_raster("in.tif", raw), tmp_path / "out", model, transform=transform)
    prob, _ = read(tmp_path / "out" / "prob.tif")
    invalid = np.isnan(raw).any(axis=0)
    np.testing.assert_array_equal(np.isnan(prob).any(axis=0), invalid)
    expected = reference(model, np.nan_to_num(raw), transform)
    np.testing.assert_allclose(prob[:, ~invalid], expected[:, ~invalid], rtol=0, atol=1e-5)
    assert invalid.any() == (dtype == "float32")


def test_percent_probabilities(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    """uint8 percent probabilities are the rounded float probabilities × 100, within 0–100, nodata 255."""
    raw = smooth_field(4, 120, 140, seed=5)
    raw[:, 50:60, 70:90] = 0
    run_engine(make_raster("in.tif", raw, nodata=0), tmp_path / "out", conv_model(3))
    pct, ds = read(tmp_path / "out" / "pct.tif")
    prob, _ = read(tmp_path / "out" / "prob.tif")
    assert pct.dtype == np.uint8 and ds.GetRasterBand(1).GetNoDataValue() == PERCENT_NODATA
    assert ds.GetRasterBand(1).GetDescription() == "probability of clear (%)"
    invalid = np.isnan(prob).all(axis=0)
    np.testing.assert_array_equal((pct == PERCENT_NODATA).all(axis=0), invalid)
    assert invalid.sum() == 200
    assert pct[:, ~invalid].max() <= 100
    np.testing.assert_array_equal(pct[:, ~invalid], np.rint(np.clip(prob[:, ~invalid], 0, 1) * 100).astype(np.uint8))
    assert len(np.unique(pct[:, ~invalid])) > 10  # real spread of values, not a constant


# --------------------------------------------------------------------------------------------------- (9) region


@pytest.mark.parametrize("kernel", [1, 3])
def test_region_run_matches_full_run(make_raster: Callable[..., Path], tmp_path: Path, kernel: int) -> None:
    """A sub-window run has the region's size and a shifted origin; its values equal the full run's over the
    region (exactly for a 1×1 model; for a 3×3 model away from the region border, where tile edges differ)."""
    raw = smooth_field(4, 260, 300, seed=6)
    path = make_raster("in.tif", raw)
    src = RasterSource.open(str(path))
    region = src.window_for_bounds(GT[0] + 375, GT[3] - 1725, GT[0] + 1865, GT[3] - 535)
    assert region == Window(37, 53, 150, 120)
    model = conv_model(kernel)
    run_engine(path, tmp_path / "full", model, tile=96, overlap=32)
    run_engine(path, tmp_path / "part", model, tile=96, overlap=32, region=region)
    full, _ = read(tmp_path / "full" / "prob.tif")
    part, ds = read(tmp_path / "part" / "prob.tif")
    assert part.shape == (3, 120, 150)
    assert ds.GetGeoTransform() == (GT[0] + 370.0, 10.0, 0.0, GT[3] - 530.0, 0.0, -10.0)
    over = full[(slice(None), *region.slices())]
    if kernel == 1:
        np.testing.assert_allclose(part, over, rtol=0, atol=1e-6)
    else:
        np.testing.assert_allclose(part[:, 1:-1, 1:-1], over[:, 1:-1, 1:-1], rtol=0, atol=1e-3)
        np.testing.assert_allclose(part.sum(axis=0), 1.0, atol=1e-5)  # border pixels: zero-padded, but valid
    cls, _ = read(tmp_path / "part" / "class.tif")
    assert (cls != CLASS_NODATA).all()


# --------------------------------------------------------------------------------------------------- (10) panels


def test_column_panels_give_the_same_result(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    """A wide raster produced in column panels (memory bound by the panel width) equals the run without panels:
    the tiles that straddle a panel edge are computed for both panels with the whole grid's weights."""
    raw = smooth_field(4, 90, 1300, seed=9)
    raw[:, 40:50, 500:530] = 0  # nodata across a panel edge
    path = make_raster("in.tif", raw, nodata=0)
    model = conv_model(3)
    whole = run_engine(path, tmp_path / "whole", model, tile=32, overlap=8)
    panels = run_engine(path, tmp_path / "panels", model, tile=32, overlap=8, panel_width=512)
    assert (whole.panels, panels.panels) == (1, 3)
    assert panels.tiles_predicted > whole.tiles_predicted  # edge tiles computed twice
    for name in ("prob.tif", "class.tif", "pct.tif"):
        a, _ = read(tmp_path / "whole" / name)
        b, ds = read(tmp_path / "panels" / name)
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
        assert ds.GetRasterBand(1).GetBlockSize() == [256, 256]
    cls, _ = read(tmp_path / "panels" / "class.tif")
    assert (cls[0, 40:50, 500:530] == CLASS_NODATA).all() and (cls[0, :40] != CLASS_NODATA).all()


def test_binary_threshold_class_head(make_raster: Callable[..., Path], tmp_path: Path) -> None:
    """A single sigmoid channel with ``binary_threshold``: the second class where p ≥ threshold, else the first."""
    raw = smooth_field(4, 70, 90, seed=8)
    path = make_raster("in.tif", raw)
    src = RasterSource.open(str(path))
    grid = TileGrid(src.window, 32, 8)
    torch.manual_seed(3)
    model = torch.nn.Conv2d(4, 1, 1)
    classes = (ClassInfo(0, "land", (0, 128, 0)), ClassInfo(1, "water", (0, 0, 255)))
    heads = [ProbabilityHead(str(tmp_path / "p.tif"), src, src.window, ["water"], percent=False),
             ClassHead(str(tmp_path / "c.tif"), src, src.window, classes, binary_threshold=0.4)]
    TiledRun(grid, StripReader(src, grid, TRANSFORM), TorchPredictor(model, CPU, "sigmoid"), 1, heads).run()
    with torch.inference_mode():
        expected = torch.sigmoid(model(torch.from_numpy(TRANSFORM.apply(raw)[None])))[0, 0].numpy()
    prob, _ = read(tmp_path / "p.tif")
    cls, _ = read(tmp_path / "c.tif")
    np.testing.assert_allclose(prob[0], expected, rtol=0, atol=1e-5)
    sure = np.abs(expected - 0.4) > 1e-4
    np.testing.assert_array_equal(cls[0][sure], (expected >= 0.4)[sure].astype(np.uint8))
    assert 0.05 < (cls[0] == 1).mean() < 0.95  # both classes occur
