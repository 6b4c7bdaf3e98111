"""Train object detector (deepraster:train_detector): a tiny training on chips that Export object training data wrote
from a generated scene of bright squares, through Processing and then Detect objects with the package it wrote; a
run killed mid-epoch resumes to the weights of an uninterrupted run; cancel keeps the best epoch; bad inputs are
refused with clear messages and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_killed_run_resumes, recording_feedback, write_raster, write_vector

GT = (500000.0, 0.5, 0.0, 5800000.0, 0.0, -0.5)
WIDTH, HEIGHT, CHIP, SQUARE = 384, 128, 64, 10

KILLED_MID_EPOCH = """
import os, signal, sys
from pathlib import Path
from deepraster.tiling.callbacks import Callbacks
from deepraster.training.detection_train import DetectorTrainRequest, train_detector

seen = []


def progress(fraction):  # a batch into epoch 2: SIGKILL, no clean-up of any kind runs
    if any(line.startswith("Epoch 1/2") for line in seen) and fraction > 0.55:
        os.kill(os.getpid(), signal.SIGKILL)


train_detector(DetectorTrainRequest(data=Path(sys.argv[1]), output=Path(sys.argv[2]), epochs=2, batch_size=2,
                                    device="cpu", seed=5, patience=0),
               Callbacks(info=seen.append, progress=progress))
"""


def square(x: int, y: int) -> str:
    x0, x1 = GT[0] + x * GT[1], GT[0] + (x + SQUARE) * GT[1]
    y0, y1 = GT[3] + y * GT[5], GT[3] + (y + SQUARE) * GT[5]
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


@pytest.fixture(scope="module")
def chips(qgis_app, tmp_path_factory) -> tuple[Path, Path]:
    """The scene (dark noise, bright squares) and our export of it: 64 px chips, blocks of two chips."""
    import processing

    root = tmp_path_factory.mktemp("detector")
    rng = np.random.default_rng(0)
    data = rng.integers(0, 60, (3, HEIGHT, WIDTH)).astype(np.uint8)
    corners = [(x + int(rng.integers(0, 8)), y + int(rng.integers(0, 8))) for y in range(4, HEIGHT - 20, 30)
               for x in range(4, WIDTH - 20, 30)]
    for x, y in corners:
        data[:, y:y + SQUARE, x:x + SQUARE] = 230
    raster = write_raster(root / "squares.tif", data, geotransform=GT, descriptions=("red", "green", "blue"))
    boxes = write_vector(root / "squares.gpkg", [square(x, y) for x, y in corners],
                         {"kind": ["square"] * len(corners)})
    processing.run("deepraster:export_object_training_data", {
        "INPUT": str(raster), "LABELS": str(boxes), "LABEL_FIELD": "kind", "CHIP_SIZE": CHIP, "BLOCK_SIZE": 64,
        "VALIDATION_FRACTION": 0.2, "SEED": 1, "OUTPUT": str(root / "chips")}, feedback=recording_feedback())
    return raster, root / "chips"


def request(data: Path, out: Path, **extra):
    from deepraster.training.detection_train import DetectorTrainRequest

    values = {"epochs": 2, "batch_size": 2, "device": "cpu", "seed": 5, "patience": 0, **extra}
    return DetectorTrainRequest(data=data, output=out, **values)


def test_trains_through_processing_and_detect_objects_runs_the_package(chips, tmp_path):
    import processing
    from osgeo import ogr

    raster, folder = chips
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {c["split"] for c in manifest["chips"]} == {"train", "validation"}
    out = processing.run("deepraster:train_detector", {
        "DATA": str(folder), "EPOCHS": 2, "BATCH_SIZE": 2, "DEVICE": "cpu", "SEED": 5,
        "OUTPUT": str(tmp_path / "squares.drpk"), "OUTPUT_REPORT": str(tmp_path / "report.html"),
        "OUTPUT_REPORT_JSON": str(tmp_path / "report.json")}, feedback=recording_feedback())
    assert out["BEST_EPOCH"] in (1, 2) and 0 <= out["MAP_50"] <= 1 and 0 <= out["MAP_50_95"] <= out["MAP_50"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["history"]) == 2 and report["validation"]["map_50"] == out["MAP_50"]
    assert report["validation"]["per_class"][0]["reference_boxes"] == sum(
        c["boxes"] for c in manifest["chips"] if c["split"] == "validation")
    assert {"loss_objectness", "loss_classifier"} <= set(report["history"][0]["loss_terms"])
    page = (tmp_path / "report.html").read_text()
    assert "mAP@0.5" in page and 'alt="precision-recall curve"' in page and 'alt="learning curves"' in page
    from deepraster.models.sources import open_model

    package = open_model(tmp_path / "squares.drpk")
    assert package.task == "object_detection" and package.architecture.framework == "torchvision"
    assert package.tile_size == CHIP and package.overlap == 16 and package.band_names == ["red", "green", "blue"]
    assert package.classes[0].name == "square" and package.provenance["best_epoch"] == out["BEST_EPOCH"]
    detected = processing.run("deepraster:detect_objects", {
        "INPUT": str(raster), "MODEL": str(tmp_path / "squares.drpk"), "CONFIDENCE": 0.05, "DEVICE": "cpu",
        "OUTPUT": str(tmp_path / "found.gpkg")}, feedback=recording_feedback())
    ds = ogr.Open(detected["OUTPUT"])
    layer = ds.GetLayer(0)
    fields = [layer.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(layer.GetLayerDefn().GetFieldCount())]
    assert fields == ["class_value", "class_name", "confidence"]
    assert all(f.GetField("class_name") == "square" for f in layer)
    assert not list(tmp_path.glob(".squares.drpk.training-*"))  # the checkpoint goes with a finished run


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(chips, tmp_path):
    from deepraster.training.detection_train import train_detector

    _, folder = chips
    first = train_detector(request(folder, tmp_path / "a.drpk"))
    assert_killed_run_resumes(train_detector, lambda package: request(folder, package), KILLED_MID_EPOCH, folder,
                              tmp_path, first)


def test_cancel_keeps_the_best_epoch_and_writes_a_package(chips, tmp_path):
    from deepraster.models.sources import open_model
    from deepraster.tiling.callbacks import Callbacks
    from deepraster.training.detection_train import train_detector

    _, folder = chips
    seen: list[str] = []
    result = train_detector(request(folder, tmp_path / "m.drpk", epochs=4),
                            Callbacks(info=seen.append, is_cancelled=lambda: any("Epoch 1/" in m for m in seen)))
    assert result.stopped == "cancelled" and result.epochs_run == 1 and result.best_epoch == 1
    assert open_model(tmp_path / "m.drpk").provenance["stopped"] == "cancelled"
    assert list(tmp_path.glob(".m.drpk.training-*/checkpoint.pt"))  # kept: running again continues


def test_bad_inputs_are_refused_with_nothing_written(chips, tmp_path):
    import processing
    from deepraster.tiling.errors import DeepRasterError
    from deepraster.training.detection_train import train_detector
    from qgis.core import QgsProcessingException

    _, folder = chips
    segmentation = tmp_path / "segmentation"
    segmentation.mkdir()
    (segmentation / "manifest.json").write_text(json.dumps({"format": "deepraster-training-chips",
                                                            "format_version": 1}))
    cases = [(request(segmentation, tmp_path / "x.drpk"), "not an object training data manifest"),
             (request(folder, tmp_path / "x.drpk", arch="yolo"), "Unknown detector 'yolo'"),
             (request(folder, tmp_path / "x.zip"), "must be a .drpk file"),
             (request(folder, tmp_path / "x.drpk", tile_size=16), "too small for a detector")]
    for bad, message in cases:
        with pytest.raises(DeepRasterError, match=message):
            train_detector(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(QgsProcessingException, match="holds neither manifest.json"):
        processing.run("deepraster:train_detector", {
            "DATA": str(empty), "OUTPUT": str(tmp_path / "y.drpk"), "OUTPUT_REPORT": str(tmp_path / "y.html")},
            feedback=recording_feedback())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "segmentation"]
