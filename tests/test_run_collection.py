""""Run over a collection" in real QGIS: the real ukis-csmask package over three rasters of the real 30 m scene,
one of them broken (processing.run and qgis_process), a raster with too few bands, Apply a saved model and Extract
deep features over generated rasters, cancel, and bad input (empty folder, output folder over the inputs, JSON)."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, S2_BANDS, recording_feedback, smooth_field, write_raster
from osgeo import gdal

ALG = "deepraster:run_collection"


def run(params: dict, feedback=None) -> dict:
    import processing
    from qgis.core import QgsProcessingFeedback

    return processing.run(ALG, params, feedback=feedback or QgsProcessingFeedback())


def rows(folder: Path) -> dict[str, dict]:
    with open(folder / "collection_summary.csv", encoding="utf-8") as f:
        return {Path(r["input"]).name: r for r in csv.DictReader(f)}


@pytest.fixture
def scene_parts(tmp_path, s2_30m) -> Path:
    """The 30 m scene cut into a west and an east half (256 × 256 px each) and a broken "raster"."""
    folder = tmp_path / "in"
    folder.mkdir()
    gdal.Translate(str(folder / "west.tif"), str(s2_30m), srcWin=[0, 0, 256, 256])
    gdal.Translate(str(folder / "east.tif"), str(s2_30m), srcWin=[256, 0, 256, 256])
    (folder / "broken.tif").write_bytes(b"II*\x00" + b"not a raster" * 20)
    return folder


def test_registered_with_outputs(qgis_app):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById(ALG)
    assert alg.displayName() == "Run over a collection" and alg.canExecute() == (True, "")
    assert {o.name() for o in alg.outputDefinitions()} >= {"OUTPUT_FOLDER", "OUTPUT_MOSAIC", "OUTPUT_TABLE",
                                                          "OUTPUT_JSON", "SUCCEEDED", "FAILED"}


def test_three_rasters_one_broken(qgis_app, scene_parts, model_6b_l1c, tmp_path, s2_30m):
    """Two outputs named after their inputs, a mosaic covering both halves, a clear report for the broken one."""
    out_folder = tmp_path / "out"
    feedback = recording_feedback()
    params = {"MODEL": str(model_6b_l1c), "DEVICE": "cpu", "OUTPUT_PROBABILITIES": True}
    out = run({"ALGORITHM": "classify_pixels", "INPUT_FOLDER": str(scene_parts), "PARAMETERS": json.dumps(params),
               "OUTPUT_FOLDER": str(out_folder)}, feedback)
    assert (out["SUCCEEDED"], out["FAILED"]) == (2, 1)
    table = rows(out_folder)
    assert [table[n]["status"] for n in ("broken.tif", "east.tif", "west.tif")] == ["failed", "ok", "ok"]
    assert "Cannot open" in table["broken.tif"]["message"] and "broken.tif" in table["broken.tif"]["message"]
    assert table["west.tif"]["output"] == str(out_folder / "west.tif") and float(table["west.tif"]["seconds"]) > 0
    for name in ("west", "east"):
        classes = gdal.Open(str(out_folder / f"{name}.tif"))
        assert (classes.RasterXSize, classes.RasterYSize) == (256, 256)
        assert gdal.Open(str(out_folder / f"{name}_probabilities.tif")).RasterCount == 3
    mosaic = gdal.Open(out["OUTPUT_MOSAIC"])
    scene = gdal.Open(str(s2_30m))
    assert (mosaic.RasterXSize, mosaic.RasterYSize) == (512, 256)
    assert mosaic.GetGeoTransform() == scene.GetGeoTransform()
    classes = mosaic.ReadAsArray()
    assert set(np.unique(classes)) <= {0, 1, 2} and (classes == 1).any()
    summary = json.loads(Path(out["OUTPUT_JSON"]).read_text())
    assert summary["counts"] == {"inputs": 3, "ok": 2, "failed": 1, "cancelled": 0}
    assert summary["mosaic"] == str(out_folder / "collection_mosaic.vrt")
    log = "\n".join(feedback.messages)
    assert "broken.tif is left out: Cannot open" in log and "2 of 3 inputs done, 1 failed" in log
    assert sorted(p.name for p in scene_parts.iterdir()) == ["broken.tif", "east.tif", "west.tif"]
    assert not list(out_folder.glob(".*"))  # no temporary or lock file left


def test_raster_with_too_few_bands_is_reported(qgis_app, scene_parts, model_6b_l1c, tmp_path):
    """A 3-band raster among the scene's 10-band ones: a per-input message naming the model's bands."""
    write_raster(scene_parts / "rgb.tif", smooth_field(3, 64, 64), descriptions=("B04", "B03", "B02"))
    (scene_parts / "broken.tif").unlink()
    feedback = recording_feedback()
    out = run({"ALGORITHM": 0, "INPUT_LAYERS": [str(scene_parts / n) for n in ("rgb.tif", "west.tif")],
               "PARAMETERS": json.dumps({"MODEL": str(model_6b_l1c), "DEVICE": "cpu"}),
               "OUTPUT_FOLDER": str(tmp_path / "out")}, feedback)
    assert (out["SUCCEEDED"], out["FAILED"]) == (1, 1)
    message = rows(tmp_path / "out")["rgb.tif"]["message"]
    assert message.startswith("it has 3 bands; the model ukis-csmask-6b-l1c (blue, green, red, nir, swir16, "
                              "swir22) needs 6.")
    assert "different band counts: 3 (rgb.tif); 10 (west.tif)" in "\n".join(feedback.messages)
    assert out["OUTPUT_MOSAIC"].endswith("collection_mosaic.vrt")  # a mosaic of one output


def test_apply_saved_model_over_generated_rasters(qgis_app, tmp_path):
    """A k-means model fitted on one raster, applied to three; the one in another CRS: no mosaic, and why."""
    import processing

    folder = tmp_path / "in"
    folder.mkdir()
    for i, (x, epsg) in enumerate([(500000.0, 32633), (500640.0, 32633), (500000.0, 32632)]):
        write_raster(folder / f"r{i}.tif", smooth_field(4, 48, 64, seed=i), epsg=epsg,
                     geotransform=(x, 10.0, 0.0, 5800000.0, 0.0, -10.0))
    model = tmp_path / "k.joblib"
    processing.run("deepraster:cluster_pixels", {"INPUT": str(folder / "r0.tif"), "N_CLUSTERS": 3,
                                                 "SAMPLE_SIZE": 500, "OUTPUT": str(tmp_path / "c.tif"),
                                                 "OUTPUT_MODEL": str(model)})
    feedback = recording_feedback()
    out = run({"ALGORITHM": "apply_model", "INPUT_FOLDER": str(folder), "PATTERN": "r*.tif",
               "PARAMETERS": json.dumps({"MODEL": str(model)}), "OUTPUT_FOLDER": str(tmp_path / "out")}, feedback)
    assert (out["SUCCEEDED"], out["FAILED"]) == (3, 0) and out["OUTPUT_MOSAIC"] is None
    assert "different CRS (EPSG:32633 for r0.tif, EPSG:32632 for r2.tif)" in "\n".join(feedback.messages)
    expected = gdal.Open(str(tmp_path / "c.tif")).ReadAsArray()
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "out" / "r0.tif")).ReadAsArray(), expected)
    assert "different CRS" in json.loads(Path(out["OUTPUT_JSON"]).read_text())["mosaic_note"]


def test_extract_features_over_a_vrt_mosaics_sources(qgis_app, tmp_path, model_6b_l1c):
    """The sources of a VRT mosaic through the package's encoder: one feature raster each, and their mosaic."""
    names = [S2_BANDS[i] for i in (0, 1, 2, 6, 8, 9)]
    parts = [write_raster(tmp_path / f"p{i}.tif", smooth_field(6, 64, 64, seed=i), descriptions=tuple(names),
                          geotransform=(500000.0 + 640 * i, 10.0, 0.0, 5800000.0, 0.0, -10.0)) for i in range(2)]
    vrt = tmp_path / "scene.vrt"
    gdal.BuildVRT(str(vrt), [str(p) for p in parts]).FlushCache()
    out = run({"ALGORITHM": "extract_features", "INPUT_VRT": str(vrt), "OUTPUT_FOLDER": str(tmp_path / "out"),
               "PARAMETERS": json.dumps({"MODEL": str(model_6b_l1c), "STRIDE": 3, "DEVICE": "cpu",
                                         "RESUME": False})})
    assert out["SUCCEEDED"] == 2
    single = gdal.Open(str(tmp_path / "out" / "p0.tif"))
    mosaic = gdal.Open(out["OUTPUT_MOSAIC"])
    assert mosaic.RasterCount == single.RasterCount > 100
    assert mosaic.RasterXSize == 2 * single.RasterXSize


def test_cancel_keeps_what_was_finished(qgis_app, scene_parts, model_6b_l1c, tmp_path):
    """Cancelled while the second input runs: the first output stays, the rest is marked cancelled."""
    feedback = recording_feedback()
    starts = []
    original = feedback.pushInfo

    def push_info(text):
        original(text)
        if text.startswith("Classify pixels: reading"):
            starts.append(text)
            if len(starts) == 2:
                feedback.cancel()

    feedback.pushInfo = push_info
    (scene_parts / "broken.tif").unlink()
    write_raster(scene_parts / "zzz.tif", smooth_field(10, 64, 64), descriptions=S2_BANDS)
    out = run({"ALGORITHM": "classify_pixels", "INPUT_FOLDER": str(scene_parts), "OUTPUT_FOLDER": str(tmp_path / "o"),
               "PARAMETERS": json.dumps({"MODEL": str(model_6b_l1c), "DEVICE": "cpu"})}, feedback)
    table = rows(tmp_path / "o")
    assert [table[n]["status"] for n in ("east.tif", "west.tif", "zzz.tif")] == ["ok", "cancelled", "cancelled"]
    assert out["SUCCEEDED"] == 1 and sorted(p.name for p in (tmp_path / "o").glob("*.tif")) == ["east.tif"]


@pytest.mark.parametrize(("params", "message"), [
    ({"PARAMETERS": "{MODEL: x}"}, "not valid JSON"),
    ({"PARAMETERS": "[1, 2]"}, "must be a JSON object"),
    ({"PARAMETERS": '{"MODLE": "x"}'}, "classify_pixels has no parameter 'MODLE'. Its parameters are: MODEL"),
    ({"PARAMETERS": '{"INPUT": "x.tif"}'}, "INPUT is set for each raster of the collection"),
    ({"PARAMETERS": '{"OUTPUT_PROBABILITIES": "/tmp/p.tif"}'}, "give true to write it"),
    ({"PARAMETERS": "{}"}, "The parameters for classify_pixels do not work"),
    ({"PATTERN": "*.jp2"}, "holds no file matching *.jp2"),
    ({"INPUT_FOLDER": None}, "The collection is empty"),
])
def test_bad_input_stops_before_anything_is_written(qgis_app, scene_parts, model_6b_l1c, tmp_path, params, message):
    from qgis.core import QgsProcessingException

    base = {"ALGORITHM": "classify_pixels", "INPUT_FOLDER": str(scene_parts), "OUTPUT_FOLDER": str(tmp_path / "out"),
            "PARAMETERS": json.dumps({"MODEL": str(model_6b_l1c)})}
    with pytest.raises(QgsProcessingException, match=None) as error:
        run({**base, **params})
    assert message in str(error.value)
    assert not (tmp_path / "out").exists()


def test_output_folder_holding_the_inputs_is_refused(qgis_app, scene_parts, model_6b_l1c):
    from qgis.core import QgsProcessingException

    before = sorted(p.name for p in scene_parts.iterdir())
    with pytest.raises(QgsProcessingException, match="would overwrite the input .*Choose another output folder"):
        run({"ALGORITHM": "classify_pixels", "INPUT_FOLDER": str(scene_parts), "OUTPUT_FOLDER": str(scene_parts),
             "PARAMETERS": json.dumps({"MODEL": str(model_6b_l1c)})})
    assert sorted(p.name for p in scene_parts.iterdir()) == before


def test_through_qgis_process(scene_parts, model_6b_l1c, tmp_path):
    out_folder = tmp_path / "out"
    proc = subprocess.run([str(REPO / "scripts" / "qgis_process"), "run", ALG, "--", "ALGORITHM=classify_pixels",
                           f"INPUT_FOLDER={scene_parts}", f"OUTPUT_FOLDER={out_folder}",
                           f'PARAMETERS={{"MODEL": "{model_6b_l1c}", "DEVICE": "cpu"}}'],
                          capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "2 of 3 inputs done, 1 failed" in log and "broken.tif: Cannot open" in log
    assert sorted(p.name for p in out_folder.glob("*.tif")) == ["east.tif", "west.tif"]
    assert gdal.Open(str(out_folder / "collection_mosaic.vrt")).RasterXSize == 512
    assert rows(out_folder)["broken.tif"]["status"] == "failed"
