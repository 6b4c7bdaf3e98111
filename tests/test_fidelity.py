"""Fidelity to how a model was trained: declared training conditions, defaults inside them, a warning outside
them, the edge margin, and test-time augmentation (flips / quarter turns averaged in probability space)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from deepraster.models.errors import ModelPackageError
from deepraster.models.package import load_package
from deepraster.models.pixel_classification import ClassifyRequest, classify_raster
from deepraster.tiling.callbacks import Callbacks
from deepraster.tiling.errors import DeepRasterError
from deepraster.tiling.grid import TileGrid
from deepraster.tiling.predictor import TTA_TRANSFORMS, TorchPredictor, TTAPredictor
from helpers import smooth_field
from osgeo import gdal


def symmetric_net(seed: int = 0) -> torch.nn.Module:
    """A 3 → 3 channel conv net whose 3×3 kernels are invariant under the 8 symmetries of the square: the net is
    flip- and rotation-equivariant (zero padding included)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3, padding=1))
    with torch.no_grad():
        for conv in (net[0], net[2]):
            w = conv.weight
            views = [torch.rot90(v, k, (2, 3)) for v in (w, w.flip(3)) for k in range(4)]
            conv.weight.copy_(sum(views) / 8)
    return net.eval()


def toy_package(folder: Path, net: torch.nn.Module, tile: int = 64, overlap: int = 16, training: dict | None = None,
                edge_margin: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.jit.trace(net, torch.randn(1, 3, tile, tile)).save(str(folder / "m.pt"))
    description = {
        "format": "deepraster-model-package", "format_version": "1.0", "name": "toy", "license": "MIT",
        "task": "pixel_classification",
        "architecture": {"framework": "torchscript", "in_channels": 3, "out_channels": 3},
        "weights": {"file": "m.pt", "format": "torchscript"},
        "input": {"bands": [{"name": n} for n in ("a", "b", "c")], "value_scale": 0.0001,
                  "normalization": {"type": "none"}},
        "inference": {"tile_size": tile, "overlap": overlap, "edge_margin": edge_margin, "activation": "softmax"},
        "classes": [{"value": i, "name": f"c{i}", "color": "#102030"} for i in range(3)],
    }
    if training is not None:
        description["training"] = training
    (folder / "model.json").write_text(json.dumps(description), encoding="utf-8")
    return folder


def run(package: Path, raster: Path, out: Path, **kwargs) -> tuple[np.ndarray, list[str]]:
    warnings: list[str] = []
    request = ClassifyRequest(raster=str(raster), package=load_package(package), probabilities_path=str(out),
                              bands=(1, 2, 3), device="cpu", **kwargs)
    classify_raster(request, Callbacks(warning=warnings.append))
    # Toy packages record no weights checksum; that warning is not what these tests are about.
    return gdal.Open(str(out)).ReadAsArray(), [w for w in warnings if "checksum (sha256)" not in w]


def test_zoo_defaults_are_the_training_conditions(model_4b_l1c, model_6b_l1c):
    for folder in (model_4b_l1c, model_6b_l1c):
        package = load_package(folder)
        assert package.training.tile_size == 256 == package.tile_size
        assert package.training.pixel_size_m == (10.0, 30.0)
        assert package.training.value_range == package.expected_range == (0.0, 1.0)
        assert 0 < package.overlap < package.tile_size and package.edge_margin > 0


def test_training_block_is_optional_and_validated(tmp_path):
    plain = load_package(toy_package(tmp_path / "plain", symmetric_net()))
    assert plain.training.tile_size is None and plain.edge_margin == 0
    with pytest.raises(ModelPackageError, match="training tile"):
        load_package(toy_package(tmp_path / "off", symmetric_net(), training={"tile_size": 128}))
    with pytest.raises(ModelPackageError, match="pixel_size_m"):
        load_package(toy_package(tmp_path / "bad", symmetric_net(), training={"tile_size": 64, "pixel_size_m": [30]}))
    with pytest.raises(ModelPackageError, match="edge_margin"):
        load_package(toy_package(tmp_path / "margin", symmetric_net(), edge_margin=48))


def test_other_tile_size_runs_with_a_warning(tmp_path, make_raster):
    package = toy_package(tmp_path / "pkg", symmetric_net(), training={"tile_size": 64, "pixel_size_m": [10, 30]})
    raster = make_raster("r.tif", smooth_field(3, 100, 90))
    _, quiet = run(package, raster, tmp_path / "a.tif")
    assert quiet == []
    prob, warned = run(package, raster, tmp_path / "b.tif", tile_size=96, overlap=16)
    assert prob.shape == (3, 100, 90) and np.isfinite(prob).all()
    assert len(warned) == 1 and "96 px" in warned[0] and "64 px" in warned[0]


def test_edge_margin_starts_the_grid_before_the_edges(tmp_path, make_raster, monkeypatch):
    import deepraster.models.pixel_classification as pc

    grids = []

    def recording_grid(*args, **kwargs):
        grids.append((args, kwargs))
        return TileGrid(*args, **kwargs)

    monkeypatch.setattr(pc, "TileGrid", recording_grid)
    package = toy_package(tmp_path / "pkg", symmetric_net(), edge_margin=8)
    raster = make_raster("r.tif", smooth_field(3, 70, 90))
    run(package, raster, tmp_path / "a.tif")
    run(package, raster, tmp_path / "b.tif", edge_margin=0)
    assert [k["offset"] for _, k in grids] == [(8, 8), (0, 0)]
    grid = TileGrid(*grids[0][0], **grids[0][1])
    assert grid.row_starts[0] == grid.col_starts[0] == -8
    assert grid.row_starts[-1] + 64 >= 70 and grid.col_starts[-1] + 64 >= 90
    with pytest.raises(DeepRasterError, match="Edge margin 48 px"):
        run(package, raster, tmp_path / "c.tif", edge_margin=48)


def test_tta_of_an_equivariant_model_equals_plain_prediction():
    predictor = TorchPredictor(symmetric_net(), torch.device("cpu"), "softmax")
    batch = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    plain = predictor(batch)
    tta = TTAPredictor(predictor)(batch)
    assert len(TTA_TRANSFORMS) == 8 and tta.dtype == np.float32 and tta.shape == plain.shape
    np.testing.assert_allclose(tta, plain, atol=1e-5)


def test_tta_averages_the_eight_symmetries():
    """A model that is not equivariant: TTA is the mean of its outputs on the turned tiles, turned back."""
    torch.manual_seed(1)
    net = torch.nn.Conv2d(3, 3, 3, padding=1).eval()
    predictor = TorchPredictor(net, torch.device("cpu"), "softmax")
    batch = np.random.default_rng(1).normal(size=(1, 3, 16, 16)).astype(np.float32)
    tta = TTAPredictor(predictor)(batch)
    expected = np.zeros_like(tta)
    for k, flip in TTA_TRANSFORMS:
        x = np.rot90(batch[..., ::-1] if flip else batch, k, (2, 3))
        y = np.rot90(predictor(np.ascontiguousarray(x)), -k, (2, 3))
        expected += (y[..., ::-1] if flip else y) / 8
    np.testing.assert_allclose(tta, expected, atol=1e-6)
    np.testing.assert_allclose(tta.sum(axis=1), 1.0, atol=1e-5)
    assert (tta >= 0).all() and (tta <= 1).all()
    assert np.abs(tta - predictor(batch)).max() > 1e-3  # the augmentation did change something


def test_tta_run_of_an_equivariant_model_equals_plain_run(tmp_path, make_raster):
    package = toy_package(tmp_path / "pkg", symmetric_net(2), edge_margin=8)
    raster = make_raster("r.tif", smooth_field(3, 90, 130))
    plain, _ = run(package, raster, tmp_path / "plain.tif")
    tta, _ = run(package, raster, tmp_path / "tta.tif", tta=True)
    assert tta.shape == plain.shape == (3, 90, 130)
    np.testing.assert_allclose(tta, plain, atol=1e-5)
