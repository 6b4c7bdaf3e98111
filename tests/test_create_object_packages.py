"""Create model package for the object tasks: an image classifier (timm, safetensors) run by Classify objects to
exactly the network's own output, a torchvision detector (plain state dict) run by Detect objects, a TorchScript
detector made by ``qgis_process`` that finds every square, settings of another task refused or ignored with a note,
and weights that do not fit refused with what to change, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from classification_scene import squares_scene
from deepraster.models.create import PackageRequest, create_package
from deepraster.models.errors import ModelPackageError
from deepraster.models.sources import open_model
from deepraster.objects.detection import DetectRequest, detect_objects
from detection_scene import CLASSES as SQUARE_CLASSES
from detection_scene import square_detector
from helpers import recording_feedback, write_raster, write_vector
from osgeo import ogr
from test_detect_objects import UTM, assert_exact, read_boxes, scene
from test_qgis_process import qgis_process

ogr.UseExceptions()
BANDS = ("value", "other")
MEAN, STD = (0.3, 0.5), (0.2, 0.3)
CLASSES = [{"value": v, "name": n, "color": c} for v, n, c in ((0, "a", "#1b9e77"), (3, "b", "#d95f02"),
                                                               (7, "c", "#7570b3"))]
DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"


def matrix(classes: list[dict]) -> list:
    """A class table as the flat cells of the CLASSES matrix parameter."""
    return [cell for c in classes for cell in (c["value"], c["name"], c["color"])]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPRASTER_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A freshly initialised timm resnet10t (2 bands, 3 classes) and its weights as safetensors."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("resnet10t", pretrained=False, in_chans=2, num_classes=3).eval()
    path = tmp_path_factory.mktemp("timm") / "resnet10t.safetensors"
    save_file(net.state_dict(), str(path))
    return path, net


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> tuple[Path, dict]:
    """A torchvision detector built as a user would (no weights downloaded, 2 classes + background), its state dict
    saved with torch.save."""
    from torchvision.models import detection

    torch.manual_seed(1)
    net = getattr(detection, DETECTOR)(weights=None, weights_backbone=None, num_classes=3)
    path = tmp_path_factory.mktemp("tv") / "detector.pt"
    torch.save(net.state_dict(), path)
    return path, net.state_dict()


def classifier_request(weights: Path, output: Path, **changes) -> PackageRequest:
    return PackageRequest(**{**dict(weights=weights, output=output, name="tiny", bands=list(BANDS), classes=CLASSES,
                                    license="CC0-1.0", task="image_classification", arch="resnet10t", tile_size=32,
                                    value_scale=0.01), **changes})


def detector_request(weights: Path, output: Path, **changes) -> PackageRequest:
    return PackageRequest(**{**dict(weights=weights, output=output, name="trees", bands=["r", "g", "b"],
                                    classes=CLASSES[:2], license="CC0-1.0", task="object_detection", arch=DETECTOR,
                                    tile_size=64, overlap=16), **changes})


def test_image_classifier_runs_in_classify_objects_as_the_network_itself(qgis_app, tmp_path, classifier):
    """Created through Processing (the overlap, unused by classifiers, ignored with a note); Classify objects on
    points at pixel corners with 32 px chips gives the network's own softmax on those windows, normalised as
    given."""
    import processing

    weights, net = classifier
    feedback = recording_feedback()
    created = processing.run("deepraster:create_package", {
        "WEIGHTS": str(weights), "TASK": "image_classification", "FRAMEWORK": "timm", "ARCH": "resnet10t",
        "BANDS": ", ".join(BANDS), "CLASSES": matrix(CLASSES), "VALUE_SCALE": 0.01, "NORMALIZATION": 2,
        "MEAN": "0.3, 0.5", "STD": "0.2, 0.3", "TILE_SIZE": 32, "OVERLAP": 10, "NAME": "tiny", "LICENSE": "CC0-1.0",
        "OUTPUT": str(tmp_path / "tiny.drpk")}, feedback=feedback)
    assert any("overlap 10 ignored" in m for m in feedback.messages), feedback.messages
    package = open_model(created["OUTPUT"])
    raw = json.loads((package.folder / "model.json").read_text())
    assert raw["task"] == "image_classification" and raw["weights"]["format"] == "safetensors"
    assert raw["architecture"] == {"framework": "timm", "arch": "resnet10t", "in_channels": 2, "out_channels": 3}
    assert raw["inference"] == {"tile_size": 32, "activation": "softmax"}
    data, _ = squares_scene(seed=2)
    raster = write_raster(tmp_path / "r.tif", data, geotransform=UTM, descriptions=BANDS)
    corners = [(40, 40), (100, 60), (200, 120), (16, 16)]
    points = write_vector(tmp_path / "p.gpkg", [f"POINT ({UTM[0] + c * UTM[1]} {UTM[3] + r * UTM[5]})"
                                                for c, r in corners])
    out = processing.run("deepraster:classify_objects", {
        "INPUT": str(raster), "FEATURES": str(points), "MODEL": created["OUTPUT"], "CHIP_PIXELS": 32,
        "DEVICE": "cpu", "OUTPUT": str(tmp_path / "o.gpkg")})["OUTPUT"]
    windows = np.stack([data[:, r - 16:r + 16, c - 16:c + 16] for c, r in corners]).astype(np.float32)
    x = (windows * 0.01 - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[:, None, None]
    with torch.inference_mode():
        p = torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()
    ds = ogr.Open(str(out))  # held: its layer is only valid while the dataset lives
    rows = [(f.GetField("class_value"), f.GetField("class_name"), f.GetField("confidence")) for f in ds.GetLayer(0)]
    assert [(v, n) for v, n, _ in rows] == [(CLASSES[i]["value"], CLASSES[i]["name"]) for i in p.argmax(1)]
    assert [c for *_, c in rows] == pytest.approx(p.max(1).tolist(), abs=1e-5)


def test_torchvision_detector_runs_in_detect_objects(qgis_app, tmp_path, detector):
    """A plain torchvision state dict (enums by number, input scale kept, the unused activation ignored with a
    note): the package stores torchvision's own tensors bit for bit, and Detect objects runs it."""
    import processing
    from safetensors.torch import load_file

    weights, state = detector
    feedback = recording_feedback()
    created = processing.run("deepraster:create_package", {
        "WEIGHTS": str(weights), "TASK": 2, "FRAMEWORK": 3, "ARCH": DETECTOR, "BANDS": "r, g, b",
        "CLASSES": matrix(CLASSES[:2]), "VALUE_SCALE": 0.01, "TILE_SIZE": 64, "OVERLAP": 16, "INPUT_SCALE": 1.5,
        "ACTIVATION": 1, "NAME": "trees", "LICENSE": "CC0-1.0", "OUTPUT": str(tmp_path / "trees.drpk")},
        feedback=feedback)
    assert any("activation 'sigmoid' ignored" in m for m in feedback.messages), feedback.messages
    package = open_model(created["OUTPUT"])
    assert package.task == "object_detection" and package.architecture.input_scale == 1.5
    assert package.architecture.out_channels == 2 and package.overlap == 16
    stored = load_file(str(package.weights_file))
    assert stored.keys() == state.keys() and all(torch.equal(stored[k], state[k]) for k in state)
    raster = write_raster(tmp_path / "scene.tif", np.random.default_rng(0).integers(0, 255, (3, 64, 64),
                                                                                    dtype=np.uint8),
                          descriptions=("r", "g", "b"))
    out = processing.run("deepraster:detect_objects", {
        "INPUT": str(raster), "MODEL": created["OUTPUT"], "CONFIDENCE": 0.0, "DEVICE": "cpu",
        "OUTPUT": str(tmp_path / "boxes.gpkg")})["OUTPUT"]
    ds = ogr.Open(str(out))
    layer = ds.GetLayer(0)
    names = [layer.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(layer.GetLayerDefn().GetFieldCount())]
    assert {"class_value", "class_name", "confidence"} <= set(names)
    assert {f.GetField("class_name") for f in layer} <= {"a", "b"}


def test_torchscript_detector_made_by_qgis_process_finds_every_square(tmp_path):
    """The scripted square detector of the Detect objects tests, packaged by ``qgis_process`` (framework
    detected): every square across the tile edges found once, exactly."""
    weights = tmp_path / "squares.pt"
    square_detector().save(str(weights))
    output = tmp_path / "squares.drpk"
    proc = qgis_process("run", "deepraster:create_package", "--", f"WEIGHTS={weights}", "TASK=object_detection",
                        "BANDS=value,score", "CLASSES=" + ",".join(map(str, matrix(SQUARE_CLASSES))),
                        "VALUE_SCALE=0.01", "TILE_SIZE=64", "OVERLAP=24", "NAME=squares", "LICENSE=CC0-1.0",
                        f"OUTPUT={output}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    package = open_model(output)
    assert (package.architecture.framework, package.weights_format) == ("torchscript", "torchscript")
    raster, truth = scene(tmp_path, 64, 24)
    detect_objects(DetectRequest(str(raster), package, str(tmp_path / "boxes.gpkg"), confidence=0.0, device="cpu"))
    assert_exact(read_boxes(tmp_path / "boxes.gpkg", UTM), truth)


@pytest.mark.parametrize(("changes", "message"), [
    ({"arch": "resnet18"}, r"do not fit timm resnet18 .* weights of another network: give the architecture"),
    ({"classes": CLASSES[:2]}, r"They label 3 classes \(fc.weight: 3 rows, not 2\): give 3 classes"),
    ({"bands": ["a", "b", "c"]}, r"They take 2 bands \(conv1.0.weight\): give 2 band names"),
    ({"arch": "resnet10x"}, r"timm has no model named 'resnet10x'. Close names: resnet10t"),
    ({"framework": "smp"}, r"Framework 'smp' builds segmentation networks .* choose framework timm"),
    ({"encoder": "resnet34"}, r"An encoder \('resnet34'\) belongs to a segmentation network"),
    ({"input_scale": 2.0}, r"input scale \(2\) is a setting of torchvision detectors"),
    ({"arch": None}, r"holds only weights: give the architecture .* timm model name"),
])
def test_classifier_requests_that_do_not_fit_write_nothing(tmp_path, classifier, changes, message):
    with pytest.raises(ModelPackageError, match=message):
        create_package(classifier_request(classifier[0], tmp_path / "c.drpk", **changes))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("changes", "message"), [
    ({"classes": CLASSES[:1]}, r"They label 2 classes \(roi_heads.box_predictor.cls_score.weight: 3 rows, not 2\)"),
    ({"arch": "maskrcnn_resnet50_fpn"}, r"'maskrcnn_resnet50_fpn' is not a torchvision detector .* choose one of"),
    ({"framework": "timm"}, r"Framework 'timm' builds image classifiers .* choose framework torchvision"),
    ({"tile_size": 100}, r"tile size must be a multiple of 32 px, found 100: choose 96 or 128"),
    ({"trusted": False, "weights": None}, r"pickle.*trust"),
])
def test_detector_requests_that_do_not_fit_write_nothing(tmp_path, detector, changes, message):
    changes = dict(changes)
    if "weights" in changes:  # a whole pickled detector, not trusted
        from torchvision.models import detection

        (tmp_path / "in").mkdir()
        changes["weights"] = tmp_path / "in" / "model.pt"
        torch.save(getattr(detection, DETECTOR)(weights=None, weights_backbone=None, num_classes=3), changes["weights"])
    with pytest.raises(ModelPackageError, match=message):
        create_package(detector_request(**{"weights": detector[0], **changes}, output=tmp_path / "d.drpk"))
    assert [p.name for p in tmp_path.iterdir() if p.name != "in"] == []


def test_pickled_timm_classifier_is_read_when_trusted_and_named_by_itself(tmp_path, classifier):
    """A trusted whole pickled timm model: its architecture is read from the module, its weights converted to
    safetensors (keeping the pickle is ignored with a note)."""
    torch.save(classifier[1], tmp_path / "model.pt")
    notes: list[str] = []
    path = create_package(classifier_request(tmp_path / "model.pt", tmp_path / "c.drpk", arch=None, trusted=True,
                                             keep_pickle=True), notes.append)
    package = open_model(path)
    assert (package.architecture.arch, package.weights_format) == ("resnet10t", "safetensors")
    assert len(notes) == 1 and "keep pickle True ignored" in notes[0]
