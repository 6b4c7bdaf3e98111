"""Every algorithm's dialog, opened in the real QGIS desktop (Xvfb) at its default size, shows all its parameter
widgets without a horizontal scroll bar: the browse ("…") buttons stay in view (long labels or option texts used to
push them out). Uses ``scripts/screenshots.py``, which also makes the pictures in docs/screenshots."""

from __future__ import annotations

import sys

import pytest
from helpers import REPO

sys.path.insert(0, str(REPO / "scripts"))
import screenshots  # noqa: E402

ALGORITHMS = ("classify_pixels", "apply_model", "extract_features", "reduce_dimensions", "cluster_pixels",
              "similarity_map", "train_classifier", "create_package", "inspect_package", "install_packages",
              "evaluate_classes", "export_training_data", "train_segmentation", "detect_change",
              "detect_objects", "classify_objects", "run_collection", "export_object_training_data",
              "train_detector", "export_object_classification_data", "train_object_classifier")


def test_every_dialog_fits_at_its_default_size(tmp_path):
    if screenshots.shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is missing (scripts/setup.sh installs it)")
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
