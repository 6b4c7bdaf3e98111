"""Train segmentation model (deepraster:train_segmentation): a tiny training on chips that the real export wrote from
a generated scene with two separable classes, through Processing and through the core; seeded determinism, resume
after a kill equal to an uninterrupted run, cancel keeping the best epoch, an Esri folder, fine-tuning from the
ukis-csmask encoder, and bad inputs with clear messages and nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_killed_run_resumes, recording_feedback, write_raster, write_vector
from osgeo import gdal

GT = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)
SIZE = 192  # 192 × 192 px: chips of 32 px, blocks of 3 chips (960 m)


KILLED_MID_EPOCH = """
import os, signal, sys
from pathlib import Path
from deepraster.tiling.callbacks import Callbacks
from deepraster.training.train import TrainRequest, train_segmentation

seen = []


def progress(fraction):  # a few batches into epoch 2: SIGKILL, no clean-up of any kind runs
    if any(line.startswith("Epoch 1/2") for line in seen) and fraction > 0.6:
        os.kill(os.getpid(), signal.SIGKILL)


train_segmentation(TrainRequest(chips=Path(sys.argv[1]), output=Path(sys.argv[2]), epochs=2, batch_size=4,
                                learning_rate=0.01, device="cpu", seed=5, patience=0),
                   Callbacks(info=seen.append, progress=progress))
"""


def rect(c0: float, r0: float, c1: float, r1: float) -> str:
    x0, x1, y0, y1 = GT[0] + c0 * 10, GT[0] + c1 * 10, GT[3] - r0 * 10, GT[3] - r1 * 10
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


def scene_values(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """4 bands (B02, B03, B04, B08) of noise; NIR is high on "forest" stripes, low on "water" ones (12 px wide)."""
    rng = np.random.default_rng(1)
    data = rng.integers(800, 1200, (4, size, size)).astype(np.uint16)
    water = (np.arange(size) // 12) % 2 == 1
    data[3][:, water] = rng.integers(100, 400, (size, int(water.sum())))
    data[3][:, ~water] += 1500
    return data, np.broadcast_to(water, (size, size))


@pytest.fixture(scope="module")
def chips(qgis_app, tmp_path_factory) -> Path:
    """Our export of the scene: 32 px chips, spatial blocks of 960 m."""
    import processing

    root = tmp_path_factory.mktemp("train")
    data, _ = scene_values()
    raster = write_raster(root / "scene.tif", data, descriptions=("B02", "B03", "B04", "B08"))
    stripes = [rect(c, 0, c + 12, SIZE) for c in range(0, SIZE, 12)]
    names = ["water" if i % 2 else "forest" for i in range(len(stripes))]
    labels = write_vector(root / "labels.gpkg", stripes, {"cover": names})
    out = root / "chips"
    processing.run("deepraster:export_training_data", {
        "INPUT": str(raster), "LABELS": str(labels), "LABEL_FIELD": "cover", "CHIP_SIZE": 32, "BLOCK_SIZE": 960,
        "VALIDATION_FRACTION": 0.3, "SEED": 3, "OUTPUT": str(out)}, feedback=recording_feedback())
    return out


def request(chips: Path, out: Path, **extra):
    from deepraster.training.train import TrainRequest

    values = {"epochs": 2, "batch_size": 4, "learning_rate": 0.01, "device": "cpu", "seed": 5, "patience": 0,
              **extra}
    return TrainRequest(chips=chips, output=out, **values)


def package_tensors(path: Path) -> dict:
    from deepraster.models.sources import open_model
    from safetensors.numpy import load_file

    return load_file(str(open_model(path).weights_file))


def test_trains_and_the_package_classifies_the_scene(qgis_app, chips, tmp_path):
    import processing

    feedback = recording_feedback()
    result = processing.run("deepraster:train_segmentation", {
        "CHIPS": str(chips), "EPOCHS": 8, "BATCH_SIZE": 4, "LEARNING_RATE": 0.003, "DEVICE": "cpu", "SEED": 1,
        "OUTPUT": str(tmp_path / "model.drpk"), "OUTPUT_REPORT": str(tmp_path / "report.html"),
        "OUTPUT_REPORT_JSON": str(tmp_path / "report.json")}, feedback=feedback)
    report = json.loads(Path(result["OUTPUT_REPORT_JSON"]).read_text())
    history = report["history"]
    assert len(history) == 8
    assert history[-1]["train_loss"] < history[0]["train_loss"] * 0.7, history
    assert [c["class"] for c in report["validation"]["per_class"]] == ["forest", "water"]
    assert report["validation"]["miou"] > 0.8, report["validation"]
    assert sum(map(sum, report["validation"]["confusion_matrix"]["matrix"])) == report["validation"]["n"] > 0
    assert any(m.startswith("Epoch 8/8: training loss") for m in feedback.messages)
    html = Path(result["OUTPUT_REPORT"]).read_text()
    assert html.count("data:image/png;base64,") == 2 and "Confusion matrix" in html  # curves, split map
    assert len(report["chip_windows"]["validation"]) == report["data"]["validation_chips"]
    from deepraster.models.sources import open_model

    package = open_model(result["OUTPUT"])
    assert package.tile_size == 32 and package.overlap == 8 and package.band_names == ["B02", "B03", "B04", "B08"]
    assert [(c.value, c.name) for c in package.classes] == [(0, "forest"), (1, "water")]
    assert package.provenance["best_epoch"] == report["best_epoch"]
    assert len(package.provenance["history"]) == 8
    data, water = scene_values(96)  # a new, smaller raster of the same kind
    raster = write_raster(tmp_path / "new.tif", data, descriptions=("B02", "B03", "B04", "B08"))
    out = processing.run("deepraster:classify_pixels", {"INPUT": str(raster), "MODEL": result["OUTPUT"],
                                                        "OUTPUT_CLASSES": str(tmp_path / "classes.tif")})
    classes = gdal.Open(out["OUTPUT_CLASSES"]).ReadAsArray()
    assert (classes == water.astype(np.uint8)).mean() > 0.9


def test_seeded_runs_equal_and_a_run_killed_mid_epoch_resumes_to_the_same_weights(qgis_app, chips, tmp_path):
    from deepraster.training.train import train_segmentation

    first = train_segmentation(request(chips, tmp_path / "a.drpk"))
    second = train_segmentation(request(chips, tmp_path / "b.drpk"))
    assert first.final_weights_sha256 == second.final_weights_sha256
    assert first.history[-1]["train_loss"] == second.history[-1]["train_loss"]

    assert_killed_run_resumes(train_segmentation, lambda package: request(chips, package), KILLED_MID_EPOCH, chips,
                              tmp_path, first, timeout_s=300)
    a, c = package_tensors(tmp_path / "a.drpk"), package_tensors(tmp_path / "c.drpk")
    assert all(np.array_equal(a[k], c[k]) for k in a)
    assert not list(tmp_path.glob(".c.drpk.training-*"))  # the checkpoint goes with a finished run


def test_cancel_keeps_the_best_epoch_and_writes_a_package(qgis_app, chips, tmp_path):
    from deepraster.tiling.callbacks import Callbacks
    from deepraster.training.train import train_segmentation

    seen: list[str] = []
    result = train_segmentation(request(chips, tmp_path / "m.drpk", epochs=5),
                                Callbacks(info=seen.append, is_cancelled=lambda: any("Epoch 1/" in m for m in seen)))
    assert result.stopped == "cancelled" and result.epochs_run == 1 and result.best_epoch == 1
    from deepraster.models.sources import open_model

    assert open_model(tmp_path / "m.drpk").provenance["stopped"] == "cancelled"
    assert list(tmp_path.glob(".m.drpk.training-*/checkpoint.pt"))  # kept: running again continues


def test_esri_folder_without_split_trains(qgis_app, chips, tmp_path):
    from deepraster.tiling.callbacks import Callbacks
    from deepraster.training.train import train_segmentation

    esri = tmp_path / "esri"
    shutil.copytree(chips, esri)
    (esri / "manifest.json").unlink()
    lines: list[str] = []
    result = train_segmentation(request(esri, tmp_path / "e.drpk", epochs=1, report_json=tmp_path / "e.json"),
                                Callbacks(info=lines.append))
    assert any("drawn at random by chip (seed 5" in line for line in lines)
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["data"]["layout"] == "esri" and report["warnings"]
    assert report["data"]["validation_chips"] >= 1 and result.epochs_run == 1
    from deepraster.models.sources import open_model

    assert open_model(result.package).band_names == ["B02", "B03", "B04", "B08"]  # the .emd's BandNames


def test_fine_tuning_starts_from_the_ukis_encoder(qgis_app, chips, tmp_path, model_4b_l1c):
    from deepraster.models.sources import open_model
    from deepraster.training.train import train_segmentation

    result = train_segmentation(request(chips, tmp_path / "f.drpk", epochs=1, learning_rate=1e-12,
                                        initial_package=model_4b_l1c))
    package = open_model(result.package)
    source = open_model(model_4b_l1c)
    assert package.architecture.encoder == "efficientnet-b4"
    assert package.value_scale == source.value_scale and package.normalization == source.normalization
    tuned, original = package_tensors(result.package), package_tensors(model_4b_l1c)
    convs = [k for k in tuned if k.startswith("encoder.") and k.endswith("conv.weight")]
    assert convs and all(np.allclose(tuned[k], original[k].astype(np.float32), atol=1e-6) for k in convs)


def bad(chips: Path, tmp_path: Path, **extra) -> str:
    from deepraster.tiling.errors import DeepRasterError
    from deepraster.training.train import train_segmentation

    before = set(tmp_path.iterdir())
    with pytest.raises(DeepRasterError) as info:
        train_segmentation(request(chips, tmp_path / "x.drpk", report_html=tmp_path / "x.html", **extra))
    assert set(tmp_path.iterdir()) - before <= {chips}, "a refused run wrote something"
    return str(info.value)


def test_bad_inputs_are_refused_with_clear_messages(qgis_app, chips, tmp_path, model_4b_l1c):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds neither manifest.json" in bad(empty, tmp_path)
    mixed = tmp_path / "mixed"
    shutil.copytree(chips, mixed)
    first = sorted((mixed / "images").glob("*.tif"))[3]
    data, _ = scene_values(16)
    write_raster(first, data)
    assert "The chips differ" in bad(mixed, tmp_path)
    no_val = tmp_path / "no_val"
    shutil.copytree(chips, no_val)
    manifest = json.loads((no_val / "manifest.json").read_text())
    manifest["pixel_counts"]["validation"]["1"] = 0
    (no_val / "manifest.json").write_text(json.dumps(manifest))
    message = bad(no_val, tmp_path)
    assert "water (1)" in message and "validation chips" in message
    renamed = tmp_path / "renamed"
    shutil.copytree(chips, renamed)
    manifest = json.loads((renamed / "manifest.json").read_text())
    for i, band in enumerate(manifest["bands"]):
        band["description"] = f"band {i + 1}"
    (renamed / "manifest.json").write_text(json.dumps(manifest))
    message = bad(renamed, tmp_path, initial_package=model_4b_l1c)
    assert "(band 1, band 2, band 3, band 4) share no band with ukis-csmask-4b-l1c" in message
    assert "Not found: blue (B02, B2, blue)" in message
    assert "Epochs and batch size" in bad(chips, tmp_path, epochs=0)
    assert "cannot build Unet with encoder 'resnet-7'" in bad(chips, tmp_path, encoder="resnet-7")


def test_processing_refusals_write_nothing(qgis_app, chips, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    out = tmp_path / "out"
    out.mkdir()
    outputs = {"OUTPUT": str(out / "m.drpk"), "OUTPUT_REPORT": str(out / "r.html"),
               "OUTPUT_REPORT_JSON": str(out / "r.json")}
    with pytest.raises(QgsProcessingException, match="Choose the weights file"):
        processing.run("deepraster:train_segmentation", {"CHIPS": str(chips), "INITIAL": 2, **outputs},
                       feedback=recording_feedback())
    with pytest.raises(QgsProcessingException, match="Choose the model package"):
        processing.run("deepraster:train_segmentation", {"CHIPS": str(chips), "INITIAL": "encoder of a model package",
                                                         **outputs}, feedback=recording_feedback())
    assert not list(out.iterdir())
