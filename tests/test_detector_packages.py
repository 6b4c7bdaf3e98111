"""torchvision detectors in detection packages (framework ``torchvision``): every supported architecture built by name
without a download and kept to the detection contract on tiny tiles (class values as labels, boxes in tile pixels,
tiles never resized); packages written, validated (plugin and JSON Schema), inspected, loaded from safetensors, a
plain state dict and (trusted only) a pickle; wrong descriptions refused; a torchvision package through Detect
objects and refused by Classify pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from deepraster.models.detectors import load_detector, parse_detections, write_detection_package
from deepraster.models.errors import ModelPackageError
from deepraster.models.sources import open_model
from deepraster.models.spec import TORCHVISION_DETECTORS, Architecture
from deepraster.models.torchvision_detectors import build_torchvision_detector, has_background
from helpers import REPO, write_raster
from osgeo import ogr

CLASSES = [{"value": 3, "name": "tree", "color": "#2ca02c"}, {"value": 7, "name": "roof", "color": "#d62728"}]
SCHEMA = json.loads((REPO / "models" / "schema" / "model-package-1.0.schema.json").read_text(encoding="utf-8"))


def description(arch: str = "fasterrcnn_mobilenet_v3_large_fpn", bands: int = 4, tile: int = 64, **changes) -> dict:
    return {"format": "deepraster-model-package", "format_version": "1.0", "name": "trees", "license": "CC0-1.0",
            "task": "object_detection",
            "architecture": {"framework": "torchvision", "arch": arch, "in_channels": bands, "out_channels": 2},
            "input": {"bands": [f"b{i + 1}" for i in range(bands)], "value_scale": 0.01},
            "inference": {"tile_size": tile, "overlap": 16, "size_divisor": 32}, "classes": CLASSES, **changes}


@pytest.mark.parametrize("arch", TORCHVISION_DETECTORS)
def test_every_architecture_keeps_the_contract_on_tiles_it_does_not_resize(arch):
    """Built with random weights (nothing downloaded) for 4 bands and 2 classes; per tile boxes inside the tile,
    scores in 0–1, labels among the class values; the detector's own transform leaves an 80 px tile at 80 px."""
    torch.manual_seed(0)
    net = build_torchvision_detector(Architecture("torchvision", arch, "", 4, 2), [3, 7]).eval()
    assert net.offset == int(has_background(arch))
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 4
    x = torch.rand(2, 4, 80, 80)
    net.fit_size(80, 80)
    images, _ = net.model.transform(list(x))
    assert images.image_sizes == [(80, 80), (80, 80)]
    assert torch.equal(images.tensors[0, :, :80, :80], x[0])  # image_mean 0, image_std 1, no resampling
    with torch.inference_mode():
        found = parse_detections(net(x), 2, arch)
    for f in found:
        assert set(f.labels.tolist()) <= {3, 7}
        assert ((f.scores >= 0) & (f.scores <= 1)).all()
        assert (f.boxes >= -1e-3).all() and (f.boxes <= 80 + 1e-3).all()


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """A Faster R-CNN (MobileNetV3) detection package with random weights, as a .drpk."""
    torch.manual_seed(1)
    net = build_torchvision_detector(Architecture("torchvision", "fasterrcnn_mobilenet_v3_large_fpn", "", 4, 2),
                                     [3, 7])
    return write_detection_package(tmp_path_factory.mktemp("pkg") / "trees.drpk", description(),
                                   net.torchvision_state())


def test_package_validates_loads_strictly_and_inspects(package):
    import jsonschema
    from deepraster.models.inspect import inspect_model

    opened = open_model(package)
    raw = json.loads((opened.folder / "model.json").read_text(encoding="utf-8"))
    jsonschema.validate(raw, SCHEMA)
    assert raw["weights"]["format"] == "safetensors"
    from safetensors.numpy import load_file

    keys = set(load_file(str(opened.weights_file)))
    assert "backbone.body.0.0.weight" in keys and not any(k.startswith("model.") for k in keys)  # torchvision's own
    report = inspect_model(package)
    assert report["status"] == "valid", report
    assert report["dry_run"]["status"] == "ok" and report["package"]["architecture"]["framework"] == "torchvision"


def test_plain_state_dict_and_trusted_pickle_load(package, tmp_path):
    """torchvision's state dict saved with torch.save loads as a package's weights; a pickled detector only when
    trusted, to the same detections."""
    opened = open_model(package)
    net = load_detector(opened)
    x = torch.rand(1, 4, 64, 64)
    with torch.inference_mode():
        expected = net(x)[0]
    folder = tmp_path / "pt"
    folder.mkdir()
    torch.save(net.model.state_dict(), folder / "weights.pt")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save(net.model, pickled / "model.pt")
    for where, fmt in ((folder, "state_dict"), (pickled, "pickled_module")):
        name = next(where.iterdir()).name
        (where / "model.json").write_text(json.dumps({**description(), "weights": {"file": name, "format": fmt}}))
    with torch.inference_mode():
        again = load_detector(open_model(folder))(x)[0]
    assert torch.equal(again["boxes"], expected["boxes"]) and torch.equal(again["labels"], expected["labels"])
    from deepraster.models.loaders import load_model

    with pytest.raises(ModelPackageError, match="trust"):
        load_model(open_model(pickled))
    with torch.inference_mode():
        trusted = load_model(open_model(pickled), trusted=True)(x)[0]
    assert torch.equal(trusted["boxes"], expected["boxes"])


@pytest.mark.parametrize(("change", "message"), [
    ({"architecture": {"framework": "torchvision", "arch": "maskrcnn_resnet50_fpn", "in_channels": 4,
                       "out_channels": 2}}, "$.architecture.arch: expected one of fasterrcnn_resnet50_fpn"),
    ({"architecture": {"framework": "torchvision", "arch": "fcos_resnet50_fpn", "in_channels": 4, "out_channels": 2,
                       "kwargs": {"weights_backbone": "DEFAULT"}}}, "$.architecture.kwargs.weights_backbone: set by"),
    ({"architecture": {"framework": "torchvision", "in_channels": 4, "out_channels": 2}}, "$.architecture.arch: "
                                                                                          "missing"),
    ({"task": "pixel_classification", "inference": {"tile_size": 64, "activation": "softmax"}},
     "framework 'torchvision' holds a detector: its task is 'object_detection'"),
    ({"classes": CLASSES[:1]}, "$.classes: lists 1 classes but architecture.out_channels is 2"),
    ({"architecture": {"framework": "torchvision", "arch": "fcos_resnet50_fpn", "in_channels": 4, "out_channels": 2,
                       "input_scale": 0}}, "$.architecture.input_scale: expected a number above 0 and at most 8"),
])
def test_wrong_descriptions_are_refused_by_the_plugin_and_the_schema(tmp_path, change, message):
    import jsonschema
    from deepraster.models.description import parse_description

    raw = {**description(), "weights": {"file": "weights.safetensors"}, **change}
    with pytest.raises(ModelPackageError) as info:
        parse_description(raw, tmp_path)
    assert message in str(info.value)
    if "classes" not in change:  # the schema does not count classes
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(raw, SCHEMA)


def test_weights_of_another_architecture_are_refused_with_the_keys_named(package, tmp_path):
    folder = open_model(package).folder
    other = tmp_path / "other"
    other.mkdir()
    (other / "weights.safetensors").write_bytes((folder / "weights.safetensors").read_bytes())
    (other / "model.json").write_text(json.dumps({**description("fcos_resnet50_fpn"),
                                                  "weights": {"file": "weights.safetensors"}}))
    with pytest.raises(ModelPackageError, match="do not fit torchvision fcos_resnet50_fpn"):
        load_detector(open_model(other))


def test_runs_through_detect_objects_and_is_refused_by_classify_pixels(package, tmp_path):
    """Unchanged Detect objects: boxes as polygons with the package's class names, inside the raster; Classify
    pixels names the right tool."""
    from deepraster.models.pixel_classification import ClassifyRequest, classify_raster
    from deepraster.objects.detection import DetectRequest, detect_objects

    raster = write_raster(tmp_path / "scene.tif", np.random.default_rng(0).integers(0, 255, (4, 150, 130),
                                                                                    dtype=np.uint8),
                          descriptions=("b1", "b2", "b3", "b4"))
    out = tmp_path / "boxes.gpkg"
    stats = detect_objects(DetectRequest(str(raster), open_model(package), str(out), confidence=0.0, device="cpu"))
    assert stats.tiles_predicted > 0
    ds = ogr.Open(str(out))
    layer = ds.GetLayer(0)
    assert layer.GetFeatureCount() == stats.boxes
    minx, maxx, miny, maxy = layer.GetExtent() if stats.boxes else (500000, 501300, 5798500, 5800000)
    assert minx >= 500000 - 1e-6 and maxx <= 501300 + 1e-6 and miny >= 5798500 - 1e-6 and maxy <= 5800000 + 1e-6
    assert {f.GetField("class_name") for f in layer} <= {"tree", "roof"}
    with pytest.raises(ModelPackageError, match="Detect objects"):
        classify_raster(ClassifyRequest(str(raster), open_model(package), str(tmp_path / "classes.tif")))
    assert not (tmp_path / "classes.tif").exists()
