"""Training for objects: Export object classification training data (one Labeled_Tiles chip per feature) → Train
object classifier (a tiny timm network) → Classify objects, through Processing, on a generated scene of bright and
dark squares; the exported chip is the one Classify objects reads; a run killed mid-epoch resumes to the weights of
an uninterrupted run; cancel keeps the best epoch; an Esri Labeled_Tiles folder trains; points in another CRS are
reprojected; bad inputs are refused with nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_killed_run_resumes, recording_feedback, write_raster, write_vector

GT = (500000.0, 0.5, 0.0, 5800000.0, 0.0, -0.5)
SIZE, STEP, SQUARE, CHIP, BUFFER = 192, 24, 10, 32, 2.0

KILLED_MID_EPOCH = """
import os, signal, sys
from pathlib import Path
from deepraster.tiling.callbacks import Callbacks
from deepraster.training.classifier_train import ClassifierTrainRequest, train_object_classifier

seen = []


def progress(fraction):  # a batch into epoch 2: SIGKILL, no clean-up of any kind runs
    if any(line.startswith("Epoch 1/2") for line in seen) and fraction > 0.6:
        os.kill(os.getpid(), signal.SIGKILL)


train_object_classifier(ClassifierTrainRequest(data=Path(sys.argv[1]), output=Path(sys.argv[2]), epochs=2,
                                               batch_size=8, device="cpu", seed=5, patience=0),
                        Callbacks(info=seen.append, progress=progress))
"""


def square(x: int, y: int, size: int = SQUARE) -> str:
    x0, x1 = GT[0] + x * GT[1], GT[0] + (x + size) * GT[1]
    y0, y1 = GT[3] + y * GT[5], GT[3] + (y + size) * GT[5]
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


@pytest.fixture(scope="module")
def scene(qgis_app, tmp_path_factory) -> dict:
    """Grey noise with bright and dark squares (the two classes), their polygons, and our export of them."""
    import processing

    root = tmp_path_factory.mktemp("objcls")
    rng = np.random.default_rng(0)
    data = rng.integers(90, 150, (3, SIZE, SIZE)).astype(np.uint8)
    corners, kinds = [], []
    for y in range(4, SIZE - SQUARE - 4, STEP):
        for x in range(4, SIZE - SQUARE - 4, STEP):
            x, y = x + int(rng.integers(0, 5)), y + int(rng.integers(0, 5))
            kind = "bright" if rng.random() < 0.4 else "dark"
            data[:, y:y + SQUARE, x:x + SQUARE] = 230 if kind == "bright" else 20
            corners.append((x, y))
            kinds.append(kind)
    raster = write_raster(root / "squares.tif", data, geotransform=GT, descriptions=("red", "green", "blue"))
    layer = write_vector(root / "squares.gpkg", [square(x, y) for x, y in corners], {"kind": kinds})
    out = processing.run("deepraster:export_object_classification_data", {
        "INPUT": str(raster), "LABELS": str(layer), "LABEL_FIELD": "kind", "CHIP_SIZE": CHIP, "BUFFER": BUFFER,
        "BLOCK_SIZE": 36, "VALIDATION_FRACTION": 0.25, "SEED": 4, "OUTPUT": str(root / "tiles")},
        feedback=recording_feedback())
    return {"root": root, "raster": raster, "layer": layer, "tiles": root / "tiles", "kinds": kinds, "out": out}


def request(data: Path, out: Path, **extra):
    from deepraster.training.classifier_train import ClassifierTrainRequest

    values = {"epochs": 2, "batch_size": 8, "device": "cpu", "seed": 5, "patience": 0, **extra}
    return ClassifierTrainRequest(data=data, output=out, **values)


def test_export_writes_labeled_tiles_with_the_chip_classify_objects_reads(scene):
    from deepraster.objects.chips import ChipReader, feature_chip_box, footprint_window
    from deepraster.tiling.reader import InputTransform
    from deepraster.tiling.source import RasterSource
    from deepraster.training.voc import read_voc
    from osgeo import gdal, ogr

    folder, kinds = scene["tiles"], scene["kinds"]
    assert {p.name for p in folder.iterdir()} == {"images", "labels", "manifest.json", "map.txt", "stats.txt",
                                                 "esri_model_definition.emd", "esri_accumulated_stats.json"}
    manifest = json.loads((folder / "manifest.json").read_text())
    chips = manifest["chips"]
    assert manifest["format"] == "deepraster-labeled-tiles" and manifest["buffer"] == BUFFER
    assert {c["split"] for c in chips} == {"train", "validation"}
    assert scene["out"]["TRAIN_CHIPS"] + scene["out"]["VALIDATION_CHIPS"] == len(chips)
    names = {c["value"]: c["name"] for c in manifest["classes"]}
    assert [c["name"] for c in manifest["classes"]] == ["bright", "dark"]
    for c in chips:  # each chip carries its feature's class, in its VOC file too
        assert names[c["value"]] == kinds[c["feature"]]
        assert read_voc(folder / c["label"]).names == [kinds[c["feature"]]]
    emd = json.loads((folder / "esri_model_definition.emd").read_text())
    assert emd["MetaDataMode"] == "Labeled_Tiles" and emd["ModelType"] == "ObjectClassification"
    assert len((folder / "map.txt").read_text().splitlines()) == len(chips)
    # the exported chip, normalised, is what Classify objects gives the classifier for that feature
    source = RasterSource.open(str(scene["raster"]))
    ds = ogr.Open(str(scene["layer"]))
    feature = ds.GetLayer(0).GetFeature(chips[0]["feature"] + 1)
    envelope = feature.GetGeometryRef().GetEnvelope()
    mean, std = manifest["statistics"]["mean"], manifest["statistics"]["std"]
    transform = InputTransform((1, 2, 3), shift=tuple(mean), divisor=tuple(std))
    with ChipReader(source, transform, CHIP) as reader:
        seen = reader.read(feature_chip_box(envelope, GT, BUFFER, None, CHIP), footprint_window(envelope, GT)).chip
    ds = gdal.Open(str(folder / chips[0]["image"]))
    assert ds.RasterXSize == CHIP and ds.GetRasterBand(1).DataType == gdal.GDT_Float32
    exported = (ds.ReadAsArray() - np.asarray(mean)[:, None, None]) / np.asarray(std)[:, None, None]
    assert np.allclose(exported, seen, atol=1e-4)


def test_trains_through_processing_and_classify_objects_beats_the_majority_class(scene, tmp_path):
    import processing
    from deepraster.models.sources import open_model
    from osgeo import ogr

    out = processing.run("deepraster:train_object_classifier", {
        "DATA": str(scene["tiles"]), "ARCH": "resnet10t", "EPOCHS": 3, "BATCH_SIZE": 8, "DEVICE": "cpu", "SEED": 5,
        "LEARNING_RATE": 0.003, "OUTPUT": str(tmp_path / "squares.drpk"),
        "OUTPUT_REPORT": str(tmp_path / "report.html"), "OUTPUT_REPORT_JSON": str(tmp_path / "report.json")},
        feedback=recording_feedback())
    report = json.loads((tmp_path / "report.json").read_text())
    v = report["validation"]
    assert out["BEST_EPOCH"] in (1, 2, 3) and out["BALANCED_ACCURACY"] == v["balanced_accuracy"]
    assert v["majority_baseline"]["class"] in ("bright", "dark") and len(report["history"]) == 3
    assert v["confusion_matrix"]["labels"] == ["bright", "dark"] and {"precision", "recall"} <= set(v["per_class"][0])
    page = (tmp_path / "report.html").read_text()
    assert "balanced accuracy" in page and "majority class" in page and 'alt="learning curves"' in page
    package = open_model(tmp_path / "squares.drpk")
    assert package.task == "image_classification" and package.architecture.framework == "timm"
    assert package.tile_size == CHIP and package.band_names == ["red", "green", "blue"]
    assert [c.name for c in package.classes] == ["bright", "dark"]
    assert not list(tmp_path.glob(".squares.drpk.training-*"))  # the checkpoint goes with a finished run
    classified = processing.run("deepraster:classify_objects", {
        "INPUT": str(scene["raster"]), "FEATURES": str(scene["layer"]), "MODEL": str(tmp_path / "squares.drpk"),
        "BUFFER": BUFFER, "DEVICE": "cpu", "OUTPUT": str(tmp_path / "classified.gpkg")}, feedback=recording_feedback())
    ds = ogr.Open(classified["OUTPUT"])
    predicted = [f.GetField("class_name") for f in ds.GetLayer(0)]
    manifest = json.loads((scene["tiles"] / "manifest.json").read_text())
    held_out = [c["feature"] for c in manifest["chips"] if c["split"] == "validation"]
    kinds = scene["kinds"]
    accuracy = np.mean([predicted[i] == kinds[i] for i in held_out])
    majority = max(("bright", "dark"), key=lambda k: sum(kinds[c["feature"]] == k for c in manifest["chips"]
                                                          if c["split"] == "train"))
    baseline = np.mean([kinds[i] == majority for i in held_out])
    assert accuracy > baseline, (accuracy, baseline, report["history"])
    assert np.mean([p == k for p, k in zip(predicted, kinds, strict=True)]) > 0.8


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(scene, tmp_path):
    from deepraster.training.classifier_train import train_object_classifier

    folder = scene["tiles"]
    first = train_object_classifier(request(folder, tmp_path / "a.drpk"))
    assert_killed_run_resumes(train_object_classifier, lambda package: request(folder, package), KILLED_MID_EPOCH,
                              folder, tmp_path, first)


def test_cancel_keeps_the_best_epoch_and_writes_a_package(scene, tmp_path):
    from deepraster.models.sources import open_model
    from deepraster.tiling.callbacks import Callbacks
    from deepraster.training.classifier_train import train_object_classifier

    seen: list[str] = []
    cancel = Callbacks(info=seen.append, is_cancelled=lambda: any("Epoch 1/" in m for m in seen))
    result = train_object_classifier(request(scene["tiles"], tmp_path / "m.drpk", epochs=4), cancel)
    assert result.stopped == "cancelled" and result.epochs_run == 1 and result.best_epoch == 1
    assert open_model(tmp_path / "m.drpk").provenance["stopped"] == "cancelled"
    assert list(tmp_path.glob(".m.drpk.training-*/checkpoint.pt"))  # kept: running again continues


def test_an_esri_labeled_tiles_folder_trains_with_a_drawn_split(scene, tmp_path):
    from deepraster.models.sources import open_model
    from deepraster.training.classifier_train import train_object_classifier

    esri = tmp_path / "esri"
    shutil.copytree(scene["tiles"], esri)
    (esri / "manifest.json").unlink()  # Esri's layout alone: map.txt, .emd, images/, labels/*.xml
    result = train_object_classifier(request(esri, tmp_path / "e.drpk", epochs=1))
    assert result.epochs_run == 1
    assert open_model(tmp_path / "e.drpk").provenance["data"]["split"] == "drawn at random by tile"


def test_points_in_another_crs_are_reprojected(scene, tmp_path):
    import processing
    from osgeo import ogr, osr

    source = osr.SpatialReference()
    source.ImportFromEPSG(32633)
    target = osr.SpatialReference()
    target.ImportFromEPSG(4326)
    for srs in (source, target):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_wgs84 = osr.CoordinateTransformation(source, target)
    points = []
    ds = ogr.Open(str(scene["layer"]))
    for feature in ds.GetLayer(0):
        centre = feature.GetGeometryRef().Centroid()
        centre.Transform(to_wgs84)
        points.append(centre.ExportToWkt())
    layer = write_vector(tmp_path / "points.gpkg", points, {"kind": scene["kinds"]}, epsg=4326)
    out = processing.run("deepraster:export_object_classification_data", {
        "INPUT": str(scene["raster"]), "LABELS": str(layer), "LABEL_FIELD": "kind", "CHIP_SIZE": CHIP,
        "CHIP_PIXELS": 16, "BLOCK_SIZE": 36, "VALIDATION_FRACTION": 0.25, "SEED": 4,
        "OUTPUT": str(tmp_path / "tiles")}, feedback=recording_feedback())
    manifest = json.loads((tmp_path / "tiles" / "manifest.json").read_text())
    assert out["TRAIN_CHIPS"] + out["VALIDATION_CHIPS"] == len(manifest["chips"]) > 0.5 * len(points)
    assert manifest["chip_pixels"] == 16
    window = manifest["chips"][0]["window"]
    assert window[2] in (16, 17) and window[3] in (16, 17)


def test_bad_inputs_are_refused_with_nothing_written(scene, tmp_path):
    import processing
    from deepraster.tiling.errors import DeepRasterError
    from deepraster.training.classifier_train import train_object_classifier
    from osgeo import ogr
    from qgis.core import QgsProcessingException

    base = {"INPUT": str(scene["raster"]), "LABELS": str(scene["layer"]), "LABEL_FIELD": "kind", "CHIP_SIZE": CHIP,
            "BLOCK_SIZE": 36}
    far = square(0, 0).replace("500000", "600000").replace("500005", "600005")
    empty = write_vector(tmp_path / "empty.gpkg", [square(0, 0)], {"kind": ["dark"]})
    ds = ogr.Open(str(empty), 1)
    ds.GetLayer(0).DeleteFeature(1)
    ds = None
    elsewhere = write_vector(tmp_path / "elsewhere.gpkg", [far, far], {"kind": ["dark", "bright"]})
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    cases = [({"LABELS": str(empty)}, "no feature with a geometry and a class value"),
             ({"LABELS": str(elsewhere)}, "lies on the raster"),
             ({"LABEL_FIELD": "missing"}, "class field 'missing' is not in the label layer"),
             ({"OUTPUT": str(tmp_path / "full")}, "is not empty")]
    for change, message in cases:
        with pytest.raises(QgsProcessingException, match=message):
            processing.run("deepraster:export_object_classification_data",
                           {**base, "OUTPUT": str(tmp_path / "out"), **change}, feedback=recording_feedback())
    plain = tmp_path / "plain.txt"  # an output folder under a file: it cannot be made
    plain.write_text("mine")
    with pytest.raises(QgsProcessingException):
        processing.run("deepraster:export_object_classification_data",
                       {**base, "OUTPUT": str(plain / "tiles")}, feedback=recording_feedback())
    assert plain.read_text() == "mine" and not (tmp_path / "out").exists()
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no hidden folder left
    detection = tmp_path / "detection"
    detection.mkdir()
    (detection / "manifest.json").write_text(json.dumps({"format": "deepraster-object-chips", "format_version": 1}))
    bad = [(request(detection, tmp_path / "x.drpk"), "train it with Train object detector"),
           (request(scene["tiles"], tmp_path / "x.drpk", arch="no_such_net"), "timm cannot build"),
           (request(scene["tiles"], tmp_path / "x.zip"), "must be a .drpk file"),
           (request(tmp_path / "nowhere", tmp_path / "x.drpk"), "is not a folder")]
    for req, message in bad:
        with pytest.raises(DeepRasterError, match=message):
            train_object_classifier(req)
    assert not list(tmp_path.glob("*.drpk")) and not list(tmp_path.glob(".x.drpk*"))
