"""The inference defaults a dialog shows for the chosen package (``models/package_defaults.py``): the values a run
takes, read from the description alone (folder, model.json, .drpk, .emd, .dlpk), and ``None`` for anything that is
not a readable package yet (empty, half-typed, missing, corrupt), without importing torch. The dialog side is in
``tests/test_desktop_dialogs.py``; here also the parameters that show them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from deepraster.models.package_defaults import InferenceDefaults, inference_defaults
from deepraster.models.sources import open_model
from helpers import MODEL_6B_L1C, REPO, description_only_packages


def test_a_package_folder_or_its_model_json_gives_what_a_run_takes():
    package = open_model(MODEL_6B_L1C)
    expected = InferenceDefaults(package.tile_size, package.overlap, package.value_scale)
    assert expected == InferenceDefaults(256, 52, 0.0001)
    assert inference_defaults(MODEL_6B_L1C) == expected
    assert inference_defaults(str(MODEL_6B_L1C / "model.json")) == expected


def test_archives_and_esri_definitions_are_read_without_extracting(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPRASTER_CACHE_DIR", str(tmp_path / "cache"))
    packages = description_only_packages(tmp_path)
    assert inference_defaults(packages["drpk"]) == InferenceDefaults(512, 96, 0.001)
    assert inference_defaults(packages["emd"]) == InferenceDefaults(320, 80, 1.0)
    assert inference_defaults(packages["dlpk"]) == InferenceDefaults(320, 80, 1.0)
    assert not (tmp_path / "cache").exists()
    (tmp_path / "plain.emd").write_text('{"ImageHeight": 224}', encoding="utf-8")  # no padding: a quarter tile
    assert inference_defaults(tmp_path / "plain.emd") == InferenceDefaults(224, 56, 1.0)


def test_anything_else_gives_none(tmp_path):
    typed = str(MODEL_6B_L1C / "model.json")
    (tmp_path / "broken.json").write_text('{"format": ', encoding="utf-8")
    (tmp_path / "list.json").write_text("[]", encoding="utf-8")
    (tmp_path / "wide.emd").write_text('{"ImageHeight": 256, "ImageWidth": 512}', encoding="utf-8")
    (tmp_path / "text.drpk").write_text("not a zip", encoding="utf-8")
    with zipfile.ZipFile(tmp_path / "empty.dlpk", "w") as z:
        z.writestr("nested/model.emd", "{}")
    half_typed = [typed[:i] for i in range(1, len(typed), 7) if Path(typed[:i]) != MODEL_6B_L1C]  # not the folder
    for path in (None, "", "   ", "\x00", typed[:-3], *half_typed,
                 tmp_path / "missing.json", tmp_path, MODEL_6B_L1C / "weights.safetensors", tmp_path / "broken.json",
                 tmp_path / "list.json", tmp_path / "wide.emd", tmp_path / "text.drpk", tmp_path / "empty.dlpk"):
        assert inference_defaults(path) is None, path


def test_reading_defaults_imports_no_torch():
    code = ("import sys; from deepraster.models.package_defaults import inference_defaults; "
            f"assert inference_defaults({str(MODEL_6B_L1C)!r}).tile_size == 256; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(REPO / ".build" / "plugins"), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("name", ["classify_pixels", "detect_objects", "classify_objects", "extract_features"])
def test_parameters_defaulting_to_the_package_show_its_value_in_the_dialog(qgis_app, name):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById(f"deepraster:{name}")
    shown = {p.name(): p.metadata()["widget_wrapper"] for p in alg.parameterDefinitions()
             if "widget_wrapper" in p.metadata()}
    package_defaults = {p.name() for p in alg.parameterDefinitions()
                        if p.type() == "number" and "the package's" in p.description()}
    assert package_defaults and set(shown) == package_defaults, (shown, package_defaults)
    for param, wrapper in shown.items():
        assert wrapper["class"] == "deepraster.algorithms.package_default_widgets.PackageDefaultWidget", param
        assert alg.parameterDefinition(param).defaultValue() == alg.parameterDefinition(param).minimum(), param
