"""Every algorithm's dialog, opened in the real QGIS desktop (Xvfb) at its default size, shows all its parameter
widgets without a horizontal scroll bar: the browse ("…") buttons stay in view (long labels or option texts used to
push them out); the advanced parameters that default to the package's value show it for the chosen model. Uses
``scripts/screenshots.py``, which also makes the pictures in docs/screenshots."""

from __future__ import annotations

import sys

import pytest
from helpers import MODEL_6B_L1C, REPO, S2_30M, description_only_packages

sys.path.insert(0, str(REPO / "scripts"))
import screenshots  # noqa: E402

ALGORITHMS = ("classify_pixels", "apply_model", "extract_features", "reduce_dimensions", "cluster_pixels",
              "similarity_map", "train_classifier", "create_package", "inspect_package", "install_packages",
              "evaluate_classes", "export_training_data", "train_segmentation", "detect_change",
              "detect_objects", "classify_objects", "run_collection", "export_object_training_data",
              "train_detector", "export_object_classification_data", "train_object_classifier")


@pytest.fixture
def desktop() -> None:
    if screenshots.shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is missing (scripts/setup.sh installs it)")


def test_every_dialog_fits_at_its_default_size(tmp_path, desktop):
    report = screenshots.take(tmp_path, dialogs=[(f"deepraster:{a}", a) for a in ALGORITHMS], layers=False,
                              timeout_s=240)
    assert not report["errors"], report["errors"]
    for name in ALGORITHMS:
        layout = report[name]
        print(name, layout)
        assert layout["browse_buttons"] > 0, name
        assert layout["horizontal_scroll_bars"] == [], (name, layout)
        assert layout["browse_buttons_out_of_view"] == [], (name, layout)
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000, name


def test_package_defaults_follow_the_chosen_model(tmp_path, desktop):
    """Classify pixels: tile size, overlap and value scale read "package default (…)" with the values of the package
    typed in, follow a change of package, fall back to "package default" for invalid paths (no exception), and stay
    0 / −1 / 0 as values; the Batch and Model Builder dialogs keep QGIS's own widgets and values."""
    packages = description_only_packages(tmp_path / "packages")
    checks_args = {"packages": [str(MODEL_6B_L1C), str(packages["drpk"]), str(packages["emd"])],
                   "invalid": ["/no/such/model.json", str(tmp_path), str(MODEL_6B_L1C / "weights.safetensors")],
                   "raster": str(S2_30M)}
    report = screenshots.take(tmp_path / "out", dialogs=[], layers=False, timeout_s=120,
                              checks=REPO / "tests" / "package_default_dialog.py", checks_args=checks_args)
    assert not report["errors"], report["errors"]
    seen = report["checks"]
    print(seen)
    assert seen["errors"] == [] and seen["wrapper"] == "PackageDefaultWrapper"
    default = {"TILE_SIZE": ["package default", 0], "OVERLAP": ["package default", -1],
               "VALUE_SCALE": ["package default", 0.0]}
    assert seen["empty"] == default
    assert [{name: text for name, (text, _) in shown.items()} for shown in seen["packages"]] == [
        {"TILE_SIZE": "package default (256)", "OVERLAP": "package default (52)",
         "VALUE_SCALE": "package default (0.0001)"},
        {"TILE_SIZE": "package default (512)", "OVERLAP": "package default (96)",
         "VALUE_SCALE": "package default (0.001)"},
        {"TILE_SIZE": "package default (320)", "OVERLAP": "package default (80)",
         "VALUE_SCALE": "package default (1)"}]
    assert all([value for _, value in shown.values()] == [0, -1, 0.0] for shown in seen["packages"])
    assert seen["invalid"] == [default] * 3
    assert seen["ms_per_key"] < 20, seen["ms_per_key"]
    assert seen["chosen"]["TILE_SIZE"] == ["512", 512]
    assert seen["reset"]["TILE_SIZE"] == ["package default (256)", 0]
    assert seen["parameters"] == {"TILE_SIZE": 0, "OVERLAP": -1, "VALUE_SCALE": 0.0}
    assert "PackageDefaultWrapper" not in seen["batch"]
    assert set(seen["modeler"].values()) == {"QgsProcessingModelerParameterWidget"}
    assert seen["modeler_values"] == {"TILE_SIZE": [0], "OVERLAP": [-1], "VALUE_SCALE": [0.0]}
