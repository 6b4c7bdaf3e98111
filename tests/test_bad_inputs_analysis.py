"""Issue 12, the bad-input matrix for the feature-space algorithms (Reduce dimensions, Cluster pixels, Similarity
map, Train a classifier or regressor, Apply a saved model): every careless run fails with a message that says what
is wrong and what to do, no traceback, no file left, earlier outputs untouched (``bad_inputs_cases.check_case``)."""

from __future__ import annotations

import pytest
from bad_inputs_cases import Case, check_case, world

__all__ = ["world"]  # the session fixture the cases use

EXTENT_OUTSIDE = "0,10,0,10 [EPSG:32633]"


def rd(w, out, **extra) -> dict:
    return {"INPUT": w["r6"], "N_COMPONENTS": 2, "SAMPLE_SIZE": 500, "OUTPUT": str(out / "r.tif"), **extra}


def cl(w, out, **extra) -> dict:
    return {"INPUT": w["r6"], "N_CLUSTERS": 3, "SAMPLE_SIZE": 500, "OUTPUT": str(out / "k.tif"), **extra}


def sm(w, out, **extra) -> dict:
    return {"INPUT": w["r6"], "REFERENCE": w["training"], "CLASS_FIELD": "fclass", "OUTPUT": str(out / "s.tif"),
            **extra}


def tc(w, out, **extra) -> dict:
    return {"INPUT": w["r6"], "TRAINING": w["training"], "LABEL_FIELD": "fclass", "KWARGS": '{"n_estimators": 5}',
            "OUTPUT": str(out / "t.tif"), **extra}


def am(w, out, **extra) -> dict:
    return {"INPUT": w["r6"], "MODEL": w["kmeans"], "OUTPUT": str(out / "a.tif"), **extra}


CASES = [
    Case("rd_band_out_of_range", "reduce_dimensions", lambda w, o: rd(w, o, BANDS="1;9"), r"9 do(es)? not exist"),
    Case("rd_bands_with_commas_out_of_range", "reduce_dimensions", lambda w, o: rd(w, o, BANDS="1,2,7"),
         r"7 do(es)? not exist"),
    Case("rd_all_nodata", "reduce_dimensions", lambda w, o: rd(w, o, INPUT=w["nodata"]), r"no valid pixel"),
    Case("rd_truncated_geotiff", "reduce_dimensions", lambda w, o: rd(w, o, INPUT=w["trunc"]),
         r"Cannot read the pixels"),
    Case("rd_vrt_missing_source", "reduce_dimensions", lambda w, o: rd(w, o, INPUT=w["vrt"]),
         r"Cannot read the pixels"),
    Case("rd_nmf_standardised", "reduce_dimensions", lambda w, o: rd(w, o, METHOD=7), r"NMF", extra=(r"Untick",)),
    Case("rd_kwargs_not_json", "reduce_dimensions", lambda w, o: rd(w, o, KWARGS="{n_components: 2"),
         r"KWARGS|arguments|JSON"),
    Case("rd_extent_outside", "reduce_dimensions", lambda w, o: rd(w, o, EXTENT=EXTENT_OUTSIDE),
         r"does not overlap"),
    Case("rd_model_unwritable", "reduce_dimensions", lambda w, o: rd(w, o, OUTPUT_MODEL=str(w["ro"] / "m.joblib")),
         r"no permission to write"),
    Case("rd_png_output", "reduce_dimensions", lambda w, o: rd(w, o, OUTPUT=str(o / "r.png")), r"GeoTIFF"),
    Case("cl_one_pixel_raster", "cluster_pixels", lambda w, o: cl(w, o, INPUT=w["px1"], N_CLUSTERS=3),
         r"only 1 pixel", extra=(r"lower the number of clusters",)),
    Case("cl_text_as_raster", "cluster_pixels", lambda w, o: cl(w, o, INPUT=w["text"]), r"Cannot open .*as a raster"),
    Case("cl_missing_raster", "cluster_pixels", lambda w, o: cl(w, o, INPUT=w["nope_tif"]), r"nope\.tif"),
    Case("cl_folder_as_raster", "cluster_pixels", lambda w, o: cl(w, o, INPUT=w["folder"]), r"folder"),
    Case("cl_all_nodata", "cluster_pixels", lambda w, o: cl(w, o, INPUT=w["nodata"]), r"no valid pixel"),
    Case("cl_unknown_method", "cluster_pixels", lambda w, o: cl(w, o, METHOD_NAME="NoSuchClusterer"),
         r"NoSuchClusterer"),
    Case("cl_output_is_input", "cluster_pixels", lambda w, o: cl(w, o, OUTPUT=w["r6"]), r"would overwrite the input"),
    Case("cl_two_outputs_same_path", "cluster_pixels", lambda w, o: cl(w, o, OUTPUT_MODEL=str(o / "k.tif")),
         r"both"),
    Case("sm_reference_elsewhere", "similarity_map", lambda w, o: sm(w, o, REFERENCE=w["far"]),
         r"None of the 2 feature\(s\)"),
    Case("sm_raster_without_georeferencing", "similarity_map", lambda w, o: sm(w, o, INPUT=w["nogeo"]),
         r"has no georeferencing"),
    Case("sm_band_out_of_range", "similarity_map", lambda w, o: sm(w, o, BANDS="1;2;8"), r"8 do(es)? not exist"),
    Case("sm_all_nodata", "similarity_map", lambda w, o: sm(w, o, INPUT=w["nodata"]), r"nodata"),
    Case("sm_jpg_output", "similarity_map", lambda w, o: sm(w, o, OUTPUT=str(o / "s.jpg")), r"GeoTIFF"),
    Case("sm_two_outputs_same_path", "similarity_map", lambda w, o: sm(w, o, OUTPUT_CLASSES=str(o / "s.tif")),
         r"both"),
    Case("tc_reference_elsewhere", "train_classifier", lambda w, o: tc(w, o, TRAINING=w["far"]),
         r"None of the 2 feature\(s\)"),
    Case("tc_raster_without_georeferencing", "train_classifier", lambda w, o: tc(w, o, INPUT=w["nogeo"]),
         r"has no georeferencing"),
    Case("tc_too_few_reference_points", "train_classifier", lambda w, o: tc(w, o, TRAINING=w["two_points"],
                                                                            VALIDATION=0, FOLDS=2),
         r"farm, water have a single sample", extra=(r"Add reference data",)),
    Case("tc_folds_in_a_single_group", "train_classifier", lambda w, o: tc(w, o, VALIDATION=1, GROUP_FIELD="site"),
         r"only 1 groups .*no number of folds works", extra=(r"add reference polygons", r"no validation")),
    Case("tc_label_field_not_in_layer", "train_classifier", lambda w, o: tc(w, o, LABEL_FIELD="nosuch"), r"nosuch"),
    Case("tc_one_class_only", "train_classifier", lambda w, o: tc(w, o, TRAINING=w["one_polygon"]), r"class"),
    Case("tc_folds_more_than_groups", "train_classifier", lambda w, o: tc(w, o, VALIDATION=1, FOLDS=20),
         r"only 9 groups", extra=(r"at most 9",)),
    Case("tc_same_path_two_outputs", "train_classifier",
         lambda w, o: tc(w, o, OUTPUT_PROBABILITIES=str(o / "t.tif")), r"both"),
    Case("tc_report_unwritable", "train_classifier", lambda w, o: tc(w, o, OUTPUT_REPORT=str(w["ro"] / "r.html")),
         r"no permission to write"),
    Case("tc_missing_training_file", "train_classifier", lambda w, o: tc(w, o, TRAINING=w["nope_gpkg"]),
         r"nope\.gpkg|TRAINING|training"),
    Case("tc_output_is_input", "train_classifier", lambda w, o: tc(w, o, OUTPUT=w["r6"]),
         r"would overwrite the input"),
    Case("am_wrong_band_count", "apply_model", lambda w, o: am(w, o, INPUT=w["r4"]), r"6 bands|4 bands|band"),
    Case("am_trusted_garbage_pickle", "apply_model", lambda w, o: am(w, o, MODEL=w["garbage"], TRUST=True),
         r"not a saved model of this plugin"),
    Case("am_untrusted_garbage", "apply_model", lambda w, o: am(w, o, MODEL=w["garbage"]), r"not trusted"),
    Case("am_folder_as_model", "apply_model", lambda w, o: am(w, o, MODEL=w["folder"]), r"is a folder, not a model"),
    Case("am_missing_model", "apply_model", lambda w, o: am(w, o, MODEL=w["nope_joblib"]), r"No model file at"),
    Case("am_output_is_input", "apply_model", lambda w, o: am(w, o, OUTPUT=w["r6"]), r"would overwrite the input"),
    Case("am_output_is_model", "apply_model", lambda w, o: am(w, o, OUTPUT=w["kmeans"]),
         r"would overwrite the input|GeoTIFF"),
    Case("am_probabilities_of_clusters", "apply_model",
         lambda w, o: am(w, o, OUTPUT_PROBABILITIES=str(o / "p.tif")), r"no class probabilities"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(world, tmp_path, case):
    check_case(case, world, tmp_path)
