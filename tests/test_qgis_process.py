"""The plugin from the command line: ``qgis_process`` (through scripts/qgis_process) lists and runs it, and runs a
Model Builder model (.model3) that uses it."""

from __future__ import annotations

import subprocess

import numpy as np
from helpers import REPO, cloud_mask_model
from osgeo import gdal

QGIS_PROCESS = REPO / "scripts" / "qgis_process"


def qgis_process(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(QGIS_PROCESS), *args], capture_output=True, text=True, timeout=timeout)


def test_list_shows_provider():
    result = qgis_process("list")
    assert result.returncode == 0, result.stderr
    assert "deepraster:classify_pixels" in result.stdout
    assert "Deep Raster" in result.stdout


def test_help_describes_parameters():
    result = qgis_process("help", "deepraster:classify_pixels")
    assert result.returncode == 0, result.stderr
    for name in ("INPUT", "MODEL", "BANDS", "EXTENT", "MASK", "TILE_SIZE", "OVERLAP", "DEVICE", "OUTPUT_CLASSES",
                 "OUTPUT_PROBABILITIES"):
        assert name in result.stdout


def test_run_classify(s2_30m, model_6b_l1c, tmp_path):
    result = qgis_process("run", "deepraster:classify_pixels", "--", f"INPUT={s2_30m}", f"MODEL={model_6b_l1c}",
                          f"OUTPUT_CLASSES={tmp_path / 'c.tif'}", f"OUTPUT_PROBABILITIES={tmp_path / 'p.tif'}")
    assert result.returncode == 0, result.stdout + result.stderr
    classes = gdal.Open(str(tmp_path / "c.tif")).ReadAsArray()
    assert classes.shape == (256, 512) and set(np.unique(classes)) <= {0, 1, 2}
    assert gdal.Open(str(tmp_path / "p.tif")).RasterCount == 3


def test_run_reports_bad_input(s2_30m, model_6b_l1c, tmp_path):
    """Issue 12 item 10: the comma form is read as four band numbers (QGIS 3.22 alone made it band 0, and this test
    passed for that wrong reason); four bands for a six-band model is the error."""
    result = qgis_process("run", "deepraster:classify_pixels", "--", f"INPUT={s2_30m}", f"MODEL={model_6b_l1c}",
                          "BANDS=1,2,3,4", f"OUTPUT_CLASSES={tmp_path / 'c.tif'}")
    assert result.returncode != 0
    assert "The model expects 6 bands" in result.stdout + result.stderr
    assert "4 band number(s) were given (1, 2, 3, 4)" in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []


def test_run_bands_with_commas(s2_30m, model_6b_l1c, tmp_path):
    """``BANDS=1,2,3,7,9,10`` and ``BANDS=1;2;3;7;9;10`` give the same bands (issue 12 item 10)."""
    out = {}
    for sep in (",", ";"):
        path = tmp_path / f"c{len(out)}.tif"
        result = qgis_process("run", "deepraster:classify_pixels", "--", f"INPUT={s2_30m}", f"MODEL={model_6b_l1c}",
                              f"BANDS={sep.join(['1', '2', '3', '7', '9', '10'])}", f"OUTPUT_CLASSES={path}")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "bands [1, 2, 3, 7, 9, 10]" in result.stdout
        out[sep] = gdal.Open(str(path)).ReadAsArray()
    assert np.array_equal(out[","], out[";"])


def test_run_model3(qgis_app, s2_30m, model_6b_l1c, tmp_path):
    """A .model3 file (as saved by the Model Builder) that calls Classify pixels runs through qgis_process."""
    model = tmp_path / "cloud_mask.model3"
    assert cloud_mask_model(model_6b_l1c).toFile(str(model))
    out = tmp_path / "mask.tif"
    result = qgis_process("run", str(model), "--", f"scene={s2_30m}", f"classify:mask={out}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert gdal.Open(str(out)).RasterXSize == 512
