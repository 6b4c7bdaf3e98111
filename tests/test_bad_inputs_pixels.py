"""Issue 12, the bad-input matrix for the deep-model algorithms (Classify pixels, Extract deep features): every
careless run fails with a message that says what is wrong and what to do, no traceback, no file left, earlier
outputs untouched (the checks: ``bad_inputs_cases.check_case``)."""

from __future__ import annotations

import pytest
from bad_inputs_cases import Case, check_case, world

__all__ = ["world"]  # the session fixture the cases use


def cp(w, out, **extra) -> dict:
    """Classify pixels with the 4-band package on the 4-band raster, both outputs in ``out``; ``extra`` overrides."""
    return {"INPUT": w["r4"], "MODEL": w["m4"], "OUTPUT_CLASSES": str(out / "c.tif"),
            "OUTPUT_PROBABILITIES": str(out / "p.tif"), **extra}


def ef(w, out, **extra) -> dict:
    """Extract deep features with the 4-band package's encoder on the 4-band raster; ``extra`` overrides."""
    return {"INPUT": w["r4"], "ENCODER": 0, "MODEL": w["m4"], "OUTPUT": str(out / "f.tif"), **extra}


EXTENT_OUTSIDE = "0,10,0,10 [EPSG:32633]"
EXTENT_EMPTY = "500100,500100,5799900,5799950 [EPSG:32633]"

CASES = [
    Case("cp_wrong_band_count", "classify_pixels", lambda w, o: cp(w, o, INPUT=w["r1"]), r"expects 4 bands.*only 1"),
    Case("cp_band_out_of_range", "classify_pixels", lambda w, o: cp(w, o, BANDS="1;2;3;9"), r"9 do(es)? not exist"),
    Case("cp_band_out_of_range_commas", "classify_pixels", lambda w, o: cp(w, o, BANDS="1,2,3,9"),
         r"9 do(es)? not exist"),
    Case("cp_bands_not_numbers", "classify_pixels", lambda w, o: cp(w, o, BANDS="red,green,blue,nir"),
         r"'red' is not a band number"),
    Case("cp_too_few_bands_given", "classify_pixels", lambda w, o: cp(w, o, BANDS="1,2"),
         r"expects 4 bands .*2 band number"),
    Case("cp_mismatched_model", "classify_pixels", lambda w, o: cp(w, o, MODEL=w["m6"]), r"expects 6 bands"),
    Case("cp_tampered_weights", "classify_pixels", lambda w, o: cp(w, o, MODEL=w["badsha"]),
         r"does not match the checksum"),
    Case("cp_corrupt_weights", "classify_pixels", lambda w, o: cp(w, o, MODEL=w["corrupt"]),
         r"Cannot read the weights file.*corrupt"),
    Case("cp_untrusted_pickle", "classify_pixels", lambda w, o: cp(w, o, MODEL=w["pickle_pkg"]),
         r"pickle.*trust"),
    Case("cp_missing_model", "classify_pixels", lambda w, o: cp(w, o, MODEL=w["nope_joblib"] + ".json"),
         r"No model package at"),
    Case("cp_folder_as_model", "classify_pixels", lambda w, o: cp(w, o, MODEL=w["folder"]),
         r"folder .* is not a model package: it holds no model\.json"),
    Case("cp_text_as_model", "classify_pixels", lambda w, o: cp(w, o, MODEL=w["text"]),
         r"is a text file, not a model package"),
    Case("cp_bad_json", "classify_pixels", lambda w, o: cp(w, o, MODEL=w["badjson"]), r"not valid JSON"),
    Case("cp_archive_without_package", "classify_pixels", lambda w, o: cp(w, o, MODEL=w["empty_drpk"]),
         r"holds no model\.json"),
    Case("cp_text_as_raster", "classify_pixels", lambda w, o: cp(w, o, INPUT=w["text"]), r"Cannot open .*as a raster"),
    Case("cp_truncated_geotiff", "classify_pixels", lambda w, o: cp(w, o, INPUT=w["trunc"]),
         r"Cannot read the pixels of .*trunc\.tif.*damaged"),
    Case("cp_vrt_missing_source", "classify_pixels", lambda w, o: cp(w, o, INPUT=w["vrt"]),
         r"Cannot read the pixels of .*missing\.vrt.*VRT's source"),
    Case("cp_extent_outside", "classify_pixels", lambda w, o: cp(w, o, EXTENT=EXTENT_OUTSIDE),
         r"does not overlap the raster"),
    Case("cp_extent_empty", "classify_pixels", lambda w, o: cp(w, o, EXTENT=EXTENT_EMPTY), r"extent is empty"),
    Case("cp_all_nodata", "classify_pixels", lambda w, o: cp(w, o, INPUT=w["nodata"]), r"no valid pixel"),
    Case("cp_nan_scale", "classify_pixels", lambda w, o: cp(w, o, VALUE_SCALE="nan"),
         r"value scale nan is not usable"),
    Case("cp_overlap_larger_than_tile", "classify_pixels", lambda w, o: cp(w, o, TILE_SIZE=64, OVERLAP=100),
         r"Overlap 100 px does not fit tiles of 64 px"),
    Case("cp_ndwi_without_bands", "classify_pixels", lambda w, o: cp(w, o, INPUT=w["r4_plain"], BANDS="1;2;3;4",
                                                                     MASK=1), r"NDWI mask needs a green"),
    Case("cp_unwritable_folder", "classify_pixels", lambda w, o: cp(w, o, OUTPUT_CLASSES=str(w["ro"] / "c.tif")),
         r"no permission to write in the folder"),
    Case("cp_output_is_input", "classify_pixels", lambda w, o: cp(w, o, OUTPUT_CLASSES=w["r4"]),
         r"would overwrite the input"),
    Case("cp_two_outputs_same_path", "classify_pixels",
         lambda w, o: cp(w, o, OUTPUT_PROBABILITIES=str(o / "c.tif")), r"both .*c\.tif"),
    Case("cp_png_output", "classify_pixels", lambda w, o: cp(w, o, OUTPUT_CLASSES=str(o / "c.png")),
         r"written as a GeoTIFF"),
    Case("cp_missing_output_folder", "classify_pixels",
         lambda w, o: cp(w, o, OUTPUT_CLASSES=str(o / "new" / "c.tif")), r"folder .*new does not exist"),
    Case("cp_output_is_a_folder", "classify_pixels", lambda w, o: cp(w, o, OUTPUT_CLASSES=str(o / "d.tif")),
         r"is a folder", prepare=lambda o: (o / "d.tif").mkdir()),
    Case("ef_no_model", "extract_features", lambda w, o: ef(w, o, MODEL=None), r"No encoder was chosen|model package"),
    Case("ef_corrupt_weights", "extract_features", lambda w, o: ef(w, o, MODEL=w["corrupt"]),
         r"Cannot read the weights file"),
    Case("ef_folder_as_model", "extract_features", lambda w, o: ef(w, o, MODEL=w["folder"]),
         r"not a model package"),
    Case("ef_wrong_band_count", "extract_features", lambda w, o: ef(w, o, INPUT=w["r1"]), r"expects 4 bands"),
    Case("ef_band_out_of_range", "extract_features", lambda w, o: ef(w, o, BANDS="2,3,4,5"),
         r"5 do(es)? not exist"),
    Case("ef_truncated_geotiff", "extract_features", lambda w, o: ef(w, o, INPUT=w["trunc"]),
         r"Cannot read the pixels"),
    Case("ef_all_nodata", "extract_features", lambda w, o: ef(w, o, INPUT=w["nodata"]), r"no valid pixel"),
    Case("ef_nan_scale", "extract_features", lambda w, o: ef(w, o, VALUE_SCALE="nan"), r"value scale nan"),
    Case("ef_extent_outside", "extract_features", lambda w, o: ef(w, o, EXTENT=EXTENT_OUTSIDE),
         r"does not overlap"),
    Case("ef_output_is_input", "extract_features", lambda w, o: ef(w, o, OUTPUT=w["r4"]), r"would overwrite the input"),
    Case("ef_jpg_output", "extract_features", lambda w, o: ef(w, o, OUTPUT=str(o / "f.jpg")), r"written as a GeoTIFF"),
    Case("ef_timm_weights_missing", "extract_features",
         lambda w, o: ef(w, o, ENCODER=1, MODEL=None, TIMM_MODEL="resnet18", WEIGHTS=w["nope_tif"] + ".pth"),
         r"does not exist|not found|No such"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(world, tmp_path, case):
    check_case(case, world, tmp_path)
