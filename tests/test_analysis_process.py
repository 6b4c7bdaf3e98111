"""The feature-space analysis algorithms from the command line: ``qgis_process`` lists them and runs Model Builder
models (.model3) that chain them: PCA → k-means on the raw scene, and deep features → PCA → k-means."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from helpers import REPO, analysis_chain_model
from osgeo import gdal

QGIS_PROCESS = REPO / "scripts" / "qgis_process"
ALGORITHMS = ("reduce_dimensions", "cluster_pixels", "similarity_map", "train_classifier", "apply_model")


def qgis_process(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(QGIS_PROCESS), *args], capture_output=True, text=True, timeout=timeout)


def test_listed():
    result = qgis_process("list")
    assert result.returncode == 0, result.stderr
    for name in ALGORITHMS:
        assert f"deepraster:{name}" in result.stdout


def run_chain(model, scene, tmp_path) -> np.ndarray:
    path = tmp_path / "chain.model3"
    assert model.toFile(str(path))
    out = tmp_path / "clusters.tif"
    result = qgis_process("run", str(path), "--", f"scene={scene}", f"kmeans:clusters={out}")
    assert result.returncode == 0, result.stdout + result.stderr
    ds = gdal.Open(str(out))
    band = ds.GetRasterBand(1)
    assert band.GetNoDataValue() == 255 and band.GetColorTable() is not None
    return band.ReadAsArray()


def test_model3_pca_then_kmeans(qgis_app, s2_30m, tmp_path):
    clusters = run_chain(analysis_chain_model(), s2_30m, tmp_path)
    assert clusters.shape == (256, 512) and set(np.unique(clusters)) == {0, 1, 2, 3, 4}


def test_model3_features_pca_kmeans(qgis_app, s2_30m, model_6b_l1c, tmp_path):
    from qgis.core import QgsApplication

    if QgsApplication.processingRegistry().algorithmById("deepraster:extract_features") is None:
        pytest.skip("the feature extraction algorithm is not available")
    clusters = run_chain(analysis_chain_model(model_6b_l1c), s2_30m, tmp_path)
    assert clusters.shape == (32, 64)  # stride 8
    assert set(np.unique(clusters)) == {0, 1, 2, 3, 4}


NO_SKLEARN_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
sys.path.append("/usr/share/qgis/python/plugins")
from qgis.core import QgsApplication, QgsProcessingException
app = QgsApplication([], False); app.initQgis()
from processing.core.Processing import Processing
Processing.initialize()
import processing
import deepraster
plugin = deepraster.classFactory(None)
plugin.initProcessing()
registry = QgsApplication.processingRegistry()
for name in ("reduce_dimensions", "cluster_pixels", "train_classifier", "apply_model"):
    print(name, registry.algorithmById("deepraster:" + name).canExecute())
result = processing.run("deepraster:similarity_map", {"INPUT": sys.argv[2], "REFERENCE": sys.argv[3],
                                                      "OUTPUT": sys.argv[4]})
print("SIMILARITY", result["OUTPUT"])
"""


def test_without_scikit_learn(s2_30m, tmp_path):
    """In a QGIS Python without scikit-learn (Debian's /usr/bin/python3) the algorithms load and say what to install;
    the similarity map needs numpy only and runs."""
    import os

    from helpers import DATA

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["QT_QPA_PLATFORM"] = "offscreen"
    if subprocess.run(["/usr/bin/python3", "-c", "import sklearn"], capture_output=True, env=env).returncode == 0:
        pytest.skip("scikit-learn is installed in the system Python")
    out = tmp_path / "sim.tif"
    result = subprocess.run(["/usr/bin/python3", "-c", NO_SKLEARN_SCRIPT, str(REPO / ".build" / "plugins"),
                             str(s2_30m), str(DATA / "s2" / "s2l1c_ref.gpkg"), str(out)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(False, 'Missing Python package(s): scikit-learn.") == 4
    assert 'pip install "scikit-learn" "numpy==1.' in result.stdout and "--target" in result.stdout  # installer.md
    assert f"SIMILARITY {out}" in result.stdout and gdal.Open(str(out)).RasterCount == 1
