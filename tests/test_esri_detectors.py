"""Esri ObjectDetection import: an arcgis.learn Faster R-CNN (.emd + fastai-saved weights, and as .dlpk) runs in
Detect objects and finds the boxes ArcGIS's own pipeline finds; detectors that only arcgis.learn can build are
refused with the reason.

ArcGIS's pipeline is rebuilt here from arcgis.learn's source (``MyFasterRCNN``): torchvision's
``fasterrcnn_resnet50_fpn`` with ``num_classes`` = classes + background, ``min_size`` 1.5 × chip and ``max_size``
2 × chip, fed the chip's 0–255 values divided by 255 and normalised by torchvision with ImageNet's mean and std.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from deepraster.models.errors import ModelPackageError
from deepraster.models.sources import open_model
from helpers import write_raster
from osgeo import ogr

CHIP = 128
GEOTRANSFORM = (400000.0, 0.5, 0.0, 3300000.0, 0.0, -0.5)
CLASSES = [{"Value": 1, "Name": "Tree", "Color": [0, 160, 0]}, {"Value": 2, "Name": "Roof", "Color": [200, 30, 30]}]


def emd(**changes) -> dict:
    """An .emd as arcgis.learn writes it for a FasterRCNN trained on RGB PASCAL VOC chips."""
    return {"Framework": "arcgis.learn.models._inferencing", "ModelType": "ObjectDetection",
            "InferenceFunction": "ArcGISObjectDetector.py", "ModelConfiguration": "_model_extension_inferencing",
            "ModelConfigurationFile": "ModelConfiguration.py", "ModelFileConfigurationClass": "MyFasterRCNN",
            "ModelName": "FasterRCNN", "ModelFile": "trees.pth", "ModelParameters": {"backbone": "resnet50"},
            "ImageHeight": CHIP, "ImageWidth": CHIP, "ExtractBands": [0, 1, 2], "DatasetType": "PASCAL_VOC_rectangles",
            "Classes": CLASSES, **changes}


def arcgis_network() -> torch.nn.Module:
    """The network as arcgis.learn builds it (random fixed-seed weights instead of COCO's)."""
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    torch.manual_seed(3)
    return fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=len(CLASSES) + 1,
                                   min_size=1.5 * CHIP, max_size=2 * CHIP).eval()


@pytest.fixture(scope="module")
def arcgis_model(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """(the model folder with trees.emd and the fastai-saved trees.pth, the network ArcGIS would run)."""
    folder = tmp_path_factory.mktemp("arcgis") / "trees"
    folder.mkdir()
    net = arcgis_network()
    torch.save({"model": net.state_dict(), "opt": None}, folder / "trees.pth")  # fastai Learner.save's layout
    (folder / "trees.emd").write_text(json.dumps(emd(), indent=2), encoding="utf-8")
    return folder, net


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A 128 × 128 RGB uint8 chip: dark ground with bright squares."""
    rng = np.random.default_rng(8)
    data = rng.integers(20, 60, (3, CHIP, CHIP)).astype(np.uint8)
    for x, y, size in ((10, 12, 20), (70, 30, 28), (40, 90, 16), (100, 100, 22)):
        data[:, y:y + size, x:x + size] = rng.integers(180, 250, (3, 1, 1))
    return write_raster(tmp_path_factory.mktemp("scene") / "chip.tif", data, geotransform=GEOTRANSFORM)


def arcgis_boxes(net: torch.nn.Module, raster: Path, threshold: float) -> list[tuple]:
    """ArcGIS's result on the chip: pixel boxes, class name and score above ``threshold``, best first."""
    from osgeo import gdal

    chip = torch.from_numpy(gdal.Open(str(raster)).ReadAsArray().astype(np.float32) / 255.0)
    with torch.inference_mode():
        found = net([chip])[0]
    names = {i + 1: c["Name"] for i, c in enumerate(CLASSES)}
    return [(*map(float, box), names[int(label)], float(score))
            for box, label, score in zip(found["boxes"], found["labels"], found["scores"], strict=True)
            if score >= threshold]


def gpkg_boxes(path: Path) -> list[tuple]:
    """The output's boxes in pixels (x1, y1, x2, y2), class name and confidence, best first."""
    g = GEOTRANSFORM
    ds = ogr.Open(str(path))  # held while its layer is read
    out = []
    for feature in ds.GetLayer(0):
        minx, maxx, miny, maxy = feature.GetGeometryRef().GetEnvelope()
        out.append(((minx - g[0]) / g[1], (maxy - g[3]) / g[5], (maxx - g[0]) / g[1], (miny - g[3]) / g[5],
                    feature.GetField("class_name"), feature.GetField("confidence")))
    return sorted(out, key=lambda b: -b[-1])


def test_imported_faster_rcnn_finds_the_boxes_arcgis_finds(qgis_app, arcgis_model, scene, tmp_path):
    """Same boxes (within 0.01 px), classes and scores (within 1e-4) as ArcGIS's pipeline, through Detect objects
    with one tile of the chip size."""
    from deepraster.objects.detection import DetectRequest, detect_objects

    folder, net = arcgis_model
    package = open_model(folder / "trees.emd")
    assert package.task == "object_detection"
    assert (package.architecture.framework, package.architecture.arch) == ("torchvision", "fasterrcnn_resnet50_fpn")
    assert package.architecture.input_scale == 1.5 and package.tile_size == CHIP
    assert [c.name for c in package.classes] == ["Tree", "Roof"]
    out = tmp_path / "boxes.gpkg"
    detect_objects(DetectRequest(str(scene), package, str(out), confidence=0.05, tile_size=CHIP, overlap=0,
                                 device="cpu"))
    ours, theirs = gpkg_boxes(out), arcgis_boxes(net, scene, 0.05)
    assert len(theirs) >= 10, "the reference should find boxes to compare"
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert np.allclose(a[:4], b[:4], atol=0.01) and a[4] == b[4] and abs(a[5] - b[5]) < 1e-4, (a, b)


def test_dlpk_runs_through_processing(qgis_app, arcgis_model, scene, tmp_path):
    """The .dlpk (zip of the model folder) in Detect objects: a GeoPackage of the emd's class names."""
    import processing

    folder, _ = arcgis_model
    dlpk = tmp_path / "trees.dlpk"
    with zipfile.ZipFile(dlpk, "w") as archive:
        for name in ("trees.emd", "trees.pth"):
            archive.write(folder / name, name)
    out = tmp_path / "trees.gpkg"
    processing.run("deepraster:detect_objects", {"INPUT": str(scene), "MODEL": str(dlpk), "CONFIDENCE": 0.05,
                                                 "DEVICE": "cpu", "OUTPUT": str(out)})
    found = gpkg_boxes(out)
    assert found and {b[4] for b in found} <= {"Tree", "Roof"}


@pytest.mark.parametrize("changes, message", [
    ({"ModelName": "SingleShotDetector", "ModelFileConfigurationClass": None, "ModelConfiguration": "_SSD"},
     "'SingleShotDetector' is an arcgis.learn network that only arcgis.learn can build"),
    ({"ModelParameters": {"backbone": "resnet18"}}, "backbone 'resnet18' is built from arcgis.learn's own parts"),
    ({"IsMultispectral": True, "ExtractBands": [0, 1, 2]}, "multispectral arcgis.learn detectors are not imported"),
    ({"InferenceFunction": "MyDetector.py"}, "its own ArcGIS Python raster function 'MyDetector.py'"),
    ({"ModelType": "InstanceDetection"}, "ModelType 'InstanceDetection' is not supported yet"),
])
def test_detectors_only_arcgis_can_build_are_refused(arcgis_model, tmp_path, changes, message):
    folder, _ = arcgis_model
    other = tmp_path / "other"
    other.mkdir()
    (other / "trees.pth").symlink_to(folder / "trees.pth")
    (other / "trees.emd").write_text(json.dumps(emd(**changes)), encoding="utf-8")
    with pytest.raises(ModelPackageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_model(other / "trees.emd")


def test_an_esri_detector_in_classify_pixels_names_detect_objects(qgis_app, arcgis_model, scene, tmp_path):
    from deepraster.models.pixel_classification import ClassifyRequest, classify_raster

    folder, _ = arcgis_model
    with pytest.raises(ModelPackageError, match="Detect objects"):
        classify_raster(ClassifyRequest(str(scene), open_model(folder / "trees.emd"), str(tmp_path / "c.tif")))
    assert not (tmp_path / "c.tif").exists()
