"""Image-classification packages (task ``image_classification``): the description validated by the JSON Schema and
the plugin, Inspect's dry run, a timm network from safetensors giving exactly its own output through Classify
objects, pickles only when trusted, and the chip resampling (area-weighted, nodata and off-raster pixels without
weight, decimated reads of large chips)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from classification_scene import UTM, classifier_package, squares_scene
from deepraster.models.errors import ModelPackageError, WeightsError
from deepraster.models.sources import open_model
from deepraster.objects.chips import ChipReader, resample
from deepraster.objects.classify import ClassifyObjectsRequest, classify_objects
from deepraster.tiling.reader import InputTransform
from deepraster.tiling.source import RasterSource
from helpers import REPO, write_raster, write_vector
from osgeo import ogr

ogr.UseExceptions()
BANDS = ("value", "other")
MEAN, STD = (0.3, 0.5), (0.2, 0.3)


def timm_description(**changes) -> dict:
    return {"name": "tiny-resnet", "license": "CC0-1.0", "task": "image_classification",
            "architecture": {"framework": "timm", "arch": "test_resnet", "in_channels": 2, "out_channels": 3},
            "input": {"bands": list(BANDS), "value_scale": 0.01,
                      "normalization": {"type": "mean_std", "mean": list(MEAN), "std": list(STD)}},
            "inference": {"tile_size": 32, "activation": "softmax"},
            "classes": [{"value": v, "name": n, "color": "#808080"} for v, n in ((0, "a"), (3, "b"), (7, "c"))],
            **changes}


@pytest.fixture(scope="module")
def timm_package(tmp_path_factory):
    import timm
    import torch
    from deepraster.models.package import save_package

    torch.manual_seed(0)
    net = timm.create_model("test_resnet", pretrained=False, num_classes=3, in_chans=2).eval()
    folder = save_package(tmp_path_factory.mktemp("timm") / "tiny", timm_description(), net.state_dict())
    return open_model(folder), net


def test_schema_validator_and_inspect(tmp_path, timm_package):
    import jsonschema
    from deepraster.models.description import parse_description
    from deepraster.models.inspect import inspect_model

    schema = json.loads((REPO / "models" / "schema" / "model-package-1.0.schema.json").read_text())
    scripted = classifier_package(tmp_path / "scripted")
    for folder in (scripted, timm_package[0].folder):
        description = json.loads((folder / "model.json").read_text())
        jsonschema.validate(description, schema)
        report = inspect_model(folder)
        assert report["status"] == "valid", report
        assert report["dry_run"]["output_shape"] == [1, 3] and report["package"]["task"] == "image_classification"
    bad = {**json.loads((scripted / "model.json").read_text()), "architecture": {
        "framework": "smp", "arch": "Unet", "encoder": "resnet18", "in_channels": 2, "out_channels": 3}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(ModelPackageError, match="takes a timm model or a TorchScript classifier, found 'smp'"):
        parse_description(bad, scripted)
    two = {**json.loads((scripted / "model.json").read_text()), "classes": [{"value": 1, "name": "x", "color":
                                                                              "#000000"}]}
    with pytest.raises(ModelPackageError, match=r"\$.classes: lists 1 classes .* expected 3"):
        parse_description(two, scripted)
    raw = json.loads((scripted / "model.json").read_text())
    raw["inference"] = {"tile_size": 16}
    with pytest.raises(ModelPackageError, match=r"\$.inference.activation: missing"):
        parse_description(raw, scripted)


def test_timm_network_gives_exactly_its_own_output(tmp_path, timm_package):
    """Points on pixel corners with 32 px chips: each chip is the raster's 32 × 32 px window, so the class and
    confidence are the network's own softmax on that window, normalised as the package says."""
    import torch

    package, net = timm_package
    data, _ = squares_scene(seed=2)
    raster = write_raster(tmp_path / "r.tif", data, geotransform=UTM, descriptions=BANDS)
    corners = [(40, 40), (100, 60), (200, 120), (16, 16)]
    layer = write_vector(tmp_path / "p.gpkg", [f"POINT ({UTM[0] + c * UTM[1]} {UTM[3] + r * UTM[5]})"
                                               for c, r in corners])
    out = tmp_path / "o.gpkg"
    classify_objects(ClassifyObjectsRequest(str(raster), package, str(layer), str(out), chip_pixels=32,
                                            batch_size=3, device="cpu"))
    windows = np.stack([data[:, r - 16:r + 16, c - 16:c + 16] for c, r in corners]).astype(np.float32)
    x = (windows * 0.01 - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[:, None, None]
    with torch.inference_mode():
        p = torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()
    ds = ogr.Open(str(out))
    rows = [(f.GetField("class_value"), f.GetField("confidence")) for f in ds.GetLayer(0)]
    assert [v for v, _ in rows] == [(0, 3, 7)[i] for i in p.argmax(1)]
    assert [c for _, c in rows] == pytest.approx(p.max(1).tolist(), abs=1e-5)


def test_pickled_classifier_only_when_trusted(tmp_path, timm_package):
    import torch
    from deepraster.tiling.checksums import sha256_of

    _, net = timm_package
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save(net, str(folder / "model.pt"))
    description = {**timm_description(), "format": "deepraster-model-package", "format_version": "1.0",
                   "weights": {"file": "model.pt", "format": "pickled_module",
                               "sha256": sha256_of(folder / "model.pt")}}
    (folder / "model.json").write_text(json.dumps(description))
    data, truth = squares_scene()
    raster = write_raster(tmp_path / "r.tif", data, geotransform=UTM, descriptions=BANDS)
    layer = write_vector(tmp_path / "p.gpkg", [f"POINT ({UTM[0] + 20} {UTM[3] - 20})"])
    request = ClassifyObjectsRequest(str(raster), open_model(folder), str(layer), str(tmp_path / "o.gpkg"),
                                     device="cpu")
    with pytest.raises(WeightsError, match="pickled PyTorch model"):
        classify_objects(request)
    assert not (tmp_path / "o.gpkg").exists()
    from dataclasses import replace

    assert classify_objects(replace(request, trusted=True)).classified == 1


def test_resample_is_area_weighted_over_valid_pixels():
    blocks = np.kron(np.array([[0, 1, 0, 1], [1, 0, 1, 0]] * 2, np.float32), np.ones((2, 2), np.float32))
    valid = np.ones(blocks.shape, bool)
    chip = resample(blocks[None], valid, (0, 0, 8, 8), 4)  # each output pixel is one 2 × 2 block
    assert np.array_equal(chip[0], blocks[::2, ::2])
    assert np.allclose(resample(blocks[None], valid, (0, 0, 8, 8), 1), 0.5)  # area average of all
    constant = np.full((1, 8, 8), 7.0, np.float32)
    half = valid.copy()
    half[:, 4:] = False
    masked = constant * half
    chip = resample(masked, half, (0, 0, 8, 8), 8)
    assert np.allclose(chip[0, :, :4], 7.0) and np.allclose(chip[0, :, 5:], 0.0)  # nodata carries no weight
    chip = resample(constant, valid, (-6, -6, 18, 18), 6)  # 4 px per output pixel; the raster is px 1.5–3.5
    assert np.allclose(chip[0, 1:4, 1:4], 7.0)  # pixels wholly or partly over the raster: its value, not diluted
    assert np.allclose(chip[0, 0], 0.0) and np.allclose(chip[0, :, 4:], 0.0)  # off the raster: 0


def test_large_chips_are_read_decimated(tmp_path, monkeypatch):
    """A chip window wider than MAX_READ px is read decimated: the chip of a smooth raster stays within 1 % of the
    full-resolution chip."""
    from deepraster.objects import chips

    yy, xx = np.mgrid[0:300, 0:300]
    data = np.stack([100 + 50 * np.sin(xx / 40.0) * np.cos(yy / 50.0), np.full(xx.shape, 10.0)]).astype(np.float32)
    raster = write_raster(tmp_path / "smooth.tif", data, geotransform=UTM)
    source = RasterSource.open(str(raster))
    transform = InputTransform(bands=(1, 2), scale=0.01)
    box, footprint = (20.0, 30.0, 260.0, 270.0), chips.Window(100, 100, 10, 10)
    with ChipReader(source, transform, 16) as reader:
        full = reader.read(box, footprint).chip
    monkeypatch.setattr(chips, "MAX_READ", 64)
    with ChipReader(source, transform, 16) as reader:
        decimated = reader.read(box, footprint).chip
    assert np.abs(decimated - full).max() < 0.01 * np.abs(full).max()
