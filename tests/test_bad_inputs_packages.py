"""Issue 12, the bad-input matrix for the package tools (Create model package, Inspect model package): every careless
run fails with a message that says what is wrong and what to do, no traceback, no file left, earlier outputs
untouched (``bad_inputs_cases.check_case``)."""

from __future__ import annotations

import pytest
from bad_inputs_cases import Case, check_case, world

__all__ = ["world"]  # the session fixture the cases use

CLASSES = [0, "other", "#000000", 1, "cloud", "#ffffff"]


def cr(w, out, **extra) -> dict:
    """Create model package from the pickled module (trusted), 4 bands, two classes, into ``out``."""
    return {"WEIGHTS": w["pickle"], "TRUST": True, "BANDS": "B02, B03, B04, B08", "CLASSES": CLASSES, "NAME": "t",
            "LICENSE": "CC-BY-4.0", "OUTPUT": str(out / "p.drpk"), **extra}


def ip(w, out, **extra) -> dict:
    return {"MODEL": w["m4"], "DRY_RUN": False, "OUTPUT_HTML": str(out / "r.html"), "OUTPUT_JSON": str(out / "r.json"),
            **extra}


CASES = [
    Case("cr_missing_weights", "create_package", lambda w, o: cr(w, o, WEIGHTS=w["nope_tif"] + ".pth"),
         r"nope\.tif\.pth"),
    Case("cr_folder_as_weights", "create_package", lambda w, o: cr(w, o, WEIGHTS=w["folder"]), r"folder"),
    Case("cr_text_as_weights", "create_package", lambda w, o: cr(w, o, WEIGHTS=w["text"]), r"notes\.txt"),
    Case("cr_untrusted_pickle", "create_package", lambda w, o: cr(w, o, TRUST=False), r"pickle.*trust"),
    Case("cr_unwritable_folder", "create_package", lambda w, o: cr(w, o, OUTPUT=str(w["ro"] / "p.drpk")),
         r"no permission to write"),
    Case("cr_output_is_the_weights", "create_package", lambda w, o: cr(w, o, OUTPUT=w["pickle"]),
         r"would overwrite the input"),
    Case("cr_class_value_not_a_number", "create_package",
         lambda w, o: cr(w, o, CLASSES=["zero", "other", "#000000"]), r"zero|value"),
    Case("cr_pickle_not_a_segmentation_model", "create_package", lambda w, o: cr(w, o),
         r"Conv2d, not a segmentation-models-pytorch architecture"),
    Case("cr_framework_of_another_task", "create_package",
         lambda w, o: cr(w, o, TASK="image_classification", FRAMEWORK="smp"),
         r"Framework 'smp' builds segmentation networks .* not image_classification models"),
    Case("cr_encoder_for_a_detector", "create_package", lambda w, o: cr(w, o, TASK=2, ENCODER="resnet34"),
         r"encoder .* belongs to a segmentation network"),
    Case("ip_unwritable_folder", "inspect_package", lambda w, o: ip(w, o, OUTPUT_HTML=str(w["ro"] / "r.html")),
         r"no permission to write"),
    Case("ip_two_reports_same_path", "inspect_package", lambda w, o: ip(w, o, OUTPUT_JSON=str(o / "r.html")),
         r"both"),
    Case("ip_report_over_the_package", "inspect_package",
         lambda w, o: ip(w, o, MODEL=w["badsha"], OUTPUT_JSON=w["badsha"] + "/model.json"),
         r"would overwrite the input"),
    Case("ip_report_missing_folder", "inspect_package", lambda w, o: ip(w, o, OUTPUT_HTML=str(o / "no" / "r.html")),
         r"does not exist"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(world, tmp_path, case):
    check_case(case, world, tmp_path)
