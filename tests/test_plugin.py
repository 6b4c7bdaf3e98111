"""The plugin as QGIS users get it: metadata, the zip, loading without PyTorch, styling of the outputs."""

from __future__ import annotations

import configparser
import ctypes.util
import importlib.machinery
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from helpers import REPO

NO_TORCH_SCRIPT = """
import os, sys
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
plugin.initGui()  # a second registration must be harmless
alg = QgsApplication.processingRegistry().algorithmById("deepraster:classify_pixels")
ok, message = alg.canExecute()
print("CAN_EXECUTE", ok, message)
try:
    processing.run(alg, {"INPUT": sys.argv[2], "MODEL": sys.argv[3], "OUTPUT_CLASSES": sys.argv[4]})
except QgsProcessingException as exc:
    print("RUN_ERROR", exc)
plugin.unload()
print("UNLOADED", QgsApplication.processingRegistry().providerById("deepraster") is None)
"""


def test_metadata():
    meta = configparser.ConfigParser()
    meta.read(REPO / "metadata.txt", encoding="utf-8")
    general = meta["general"]
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    assert general["license"] == "GPL-2.0-or-later"
    assert len(general["description"]) > 40 and len(general["about"]) > 200
    assert (REPO / general["icon"]).is_file()
    assert "GNU GENERAL PUBLIC LICENSE" in (REPO / "LICENSE").read_text()


def test_loads_without_torch(s2_30m, model_6b_l1c, tmp_path):
    """In a QGIS Python without PyTorch the provider loads, and the algorithm says what to install instead of failing
    with a traceback. Debian's /usr/bin/python3 (QGIS's own Python, without the venv) has no torch."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["QT_QPA_PLATFORM"] = "offscreen"
    check = subprocess.run(["/usr/bin/python3", "-c", "import torch"], capture_output=True, env=env)
    assert check.returncode != 0, "this test needs a Python where torch is missing"
    out = tmp_path / "c.tif"
    result = subprocess.run(["/usr/bin/python3", "-c", NO_TORCH_SCRIPT, str(REPO / ".build" / "plugins"),
                             str(s2_30m), str(model_6b_l1c), str(out)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "CAN_EXECUTE False Missing Python package(s): torch, segmentation-models-pytorch" in result.stdout
    assert 'pip install "torch" "segmentation-models-pytorch"' in result.stdout
    assert "RUN_ERROR Missing Python package(s)" in result.stdout
    assert "UNLOADED True" in result.stdout
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_package_zip(tmp_path):
    """`make package` builds a zip with the plugin folder and without tests or dev files; it loads in qgis_process."""
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "package.py")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    meta = configparser.ConfigParser()
    meta.read(REPO / "metadata.txt", encoding="utf-8")
    zip_path = REPO / "dist" / f"deepraster-{meta['general']['version']}.zip"
    with zipfile.ZipFile(zip_path) as z:
        names = z.namelist()
        z.extractall(tmp_path / "plugins")
    assert {"deepraster/metadata.txt", "deepraster/__init__.py", "deepraster/provider.py", "deepraster/LICENSE",
            "deepraster/icons/deepraster.svg", "deepraster/tiling/engine.py"} <= set(names)
    assert all(n.startswith("deepraster/") for n in names)
    assert not [n for n in names if "/tests/" in n or "/bench/" in n or "/scripts/" in n or n.endswith(".pyc")
                or "Makefile" in n or ".ci" in n]
    profile = tmp_path / "profile"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QGIS_PLUGINPATH": str(tmp_path / "plugins"),
           "QGIS_CUSTOM_CONFIG_PATH": str(profile)}
    binary = "/usr/bin/qgis_process.bin" if os.path.exists("/usr/bin/qgis_process.bin") else "qgis_process"
    enable = subprocess.run([binary, "plugins", "enable", "deepraster"], capture_output=True, text=True, env=env)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    listing = subprocess.run([binary, "list"], capture_output=True, text=True, env=env, timeout=120)
    assert "deepraster:classify_pixels" in listing.stdout


@pytest.mark.parametrize("percent", [False, True])
def test_output_styles(qgis_app, make_raster, percent):
    """When QGIS loads the outputs, the class raster gets the model's colours and names, a 2-class probability
    raster a 0–1 (or 0–100) colour ramp."""
    from deepraster.algorithms.styling import ClassStyle, ProbabilityStyle
    from deepraster.tiling.outputs import ClassInfo
    from qgis.core import QgsPalettedRasterRenderer, QgsRasterLayer, QgsSingleBandPseudoColorRenderer

    classes = make_raster("c.tif", np.array([[0, 1], [1, 0]], np.uint8))
    layer = QgsRasterLayer(str(classes), "classes")
    ClassStyle([ClassInfo(0, "land", (10, 200, 10)), ClassInfo(1, "water", (0, 0, 255))]).postProcessLayer(
        layer, None, None)
    renderer = layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    assert [(c.value, c.label, c.color.name()) for c in renderer.classes()] == [
        (0, "land", "#0ac80a"), (1, "water", "#0000ff")]
    prob = QgsRasterLayer(str(make_raster("p.tif", np.random.default_rng(0).random((2, 4, 4), np.float32))), "p")
    ProbabilityStyle(2, 100.0 if percent else 1.0).postProcessLayer(prob, None, None)
    assert isinstance(prob.renderer(), QgsSingleBandPseudoColorRenderer)
    assert prob.renderer().band() == 2
    assert prob.renderer().classificationMax() == (100.0 if percent else 1.0)


def test_device_choice():
    """`auto` falls back to the CPU without a GPU; asking for CUDA without one is a clear error (no GPU here)."""
    import torch
    from deepraster.tiling.errors import DeepRasterError
    from deepraster.tiling.predictor import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(DeepRasterError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(DeepRasterError, match="Unknown device"):
        resolve_device("tpu")


GUARD_SCRIPT = """
import ctypes, importlib.util, sys
if sys.argv[1] == "mesa":  # what QGIS desktop has loaded for OpenGL before any plugin runs
    ctypes.CDLL("libLLVM-15.so.1", mode=ctypes.RTLD_GLOBAL)
import deepraster
plugin = deepraster.classFactory(None)  # installs the guard, as QGIS does when it loads the plugin
print("FIND_SPEC", importlib.util.find_spec("triton"))
import segmentation_models_pytorch as smp, timm, torch
model = smp.Unet("resnet18", encoder_weights=None, in_channels=4, classes=2).eval()
with torch.no_grad():
    print("FORWARD", tuple(model(torch.zeros(1, 4, 64, 64)).shape))
from torch.utils._triton import has_triton_package
print("HAS_TRITON", has_triton_package(), repr(sys.modules.get("triton", "absent")))
del sys.modules["triton"]  # whoever drops the marker: the finder blocks the name and puts the marker back
try:
    import triton
except ImportError as exc:
    print("BLOCKED", type(exc).__name__, "DEEPRASTER_ALLOW_TRITON" in str(exc), importlib.util.find_spec("triton"))
"""


def _triton_installed() -> bool:
    """On sys.path, whatever the guard (once the plugin is loaded in this process) says to importlib."""
    return importlib.machinery.PathFinder.find_spec("triton") is not None


def _guard_run(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "DEEPRASTER_ALLOW_TRITON"}
    environment.update(QT_QPA_PLATFORM="offscreen", **env)
    environment["PYTHONPATH"] = str(REPO / ".build" / "plugins")
    return subprocess.run([sys.executable, "-X", "faulthandler", "-c", GUARD_SCRIPT, *args], capture_output=True,
                          text=True, env=environment, timeout=180)


def test_import_guard_keeps_triton_out():
    """Loading the plugin blocks triton (its LLVM clashes with Mesa's: QGIS desktop segfaulted on the first Classify
    pixels run); torch, timm and smp import and run without it, even with Mesa's libLLVM loaded (docs in
    algorithms/import_guard.py; the desktop itself: tests/test_desktop_smoke.py)."""
    if not _triton_installed():
        pytest.skip("triton is not installed here: nothing to guard against")
    mesa = "mesa" if ctypes.util.find_library("LLVM-15") or os.path.exists(
        "/usr/lib/x86_64-linux-gnu/libLLVM-15.so.1") else "plain"
    result = _guard_run(mesa)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FIND_SPEC None" in result.stdout
    assert "FORWARD (1, 2, 64, 64)" in result.stdout
    assert "HAS_TRITON False None" in result.stdout
    assert "BLOCKED ModuleNotFoundError True None" in result.stdout


def test_import_guard_can_be_turned_off():
    """DEEPRASTER_ALLOW_TRITON=1: the guard does nothing (without Mesa's libLLVM triton loads fine)."""
    if not _triton_installed():
        pytest.skip("triton is not installed here")
    result = _guard_run("plain", DEEPRASTER_ALLOW_TRITON="1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HAS_TRITON True <module 'triton'" in result.stdout


@pytest.mark.parametrize("classes_name, probabilities_name", [("a_classes.tif", "b_probabilities.tif"),
                                                              ("b_classes.tif", "a_probabilities.tif")])
def test_loaded_layers_order_names_and_visibility(qgis_app, s2_30m, model_6b_l1c, tmp_path, classes_name,
                                                   probabilities_name):
    """QGIS 3.22 loads a run's layers in the order of their paths, each on top of the last: whichever order, the class
    layer ends up above the probability layer, which is hidden; both are named after the input and the model."""
    import processing
    from osgeo import gdal
    from qgis.core import QgsProject, QgsRasterLayer

    raster = tmp_path / "Lake scene.tif"
    gdal.Translate(str(raster), str(s2_30m), srcWin=[0, 0, 128, 96])
    project = QgsProject.instance()
    project.clear()
    layer = QgsRasterLayer(str(raster), "Lake scene")
    project.addMapLayer(layer)
    processing.runAndLoadResults("deepraster:classify_pixels", {
        "INPUT": layer.id(), "MODEL": str(model_6b_l1c), "DEVICE": 1,
        "OUTPUT_CLASSES": str(tmp_path / classes_name), "OUTPUT_PROBABILITIES": str(tmp_path / probabilities_name)})
    names = [child.name() for child in project.layerTreeRoot().children()]
    assert names[:2] == ["Lake scene — ukis-csmask-6b-l1c classes", "Lake scene — ukis-csmask-6b-l1c probabilities"]
    nodes = project.layerTreeRoot().children()
    assert nodes[0].isVisible() and not nodes[1].itemVisibilityChecked()
    probabilities = nodes[1].layer()
    assert probabilities.renderer().type() == "singlebandpseudocolor" and probabilities.renderer().band() == 2
    palette = {c.label: c.color.name() for c in nodes[0].layer().renderer().classes()}
    assert palette["cloud"] == "#26a4e3"  # readable on the white canvas, unlike the old #f0f0f0
    project.clear()
