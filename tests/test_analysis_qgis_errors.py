"""The feature-space analysis algorithms in real QGIS (processing.run): every bad input explained, untrusted models
refused, extents and rasters in degrees."""

from __future__ import annotations

import json

import numpy as np
import pytest
from analysis_scene import GT, private_config, run, scene, square, transformer
from helpers import write_raster, write_vector
from osgeo import gdal

__all__ = ["private_config", "scene"]  # fixtures used by the tests below

def bad_cases():
    base = {"LABEL_FIELD": "fclass", "PIXELS_PER_POLYGON": 10, "KWARGS": '{"n_estimators": 5}'}
    return [
        ("train_classifier", {**base, "METHOD_NAME": "RandomForst"}, r"Did you mean RandomForestClassifier\?"),
        ("train_classifier", {**base, "KWARGS": '{"n_trees": 5}'},
         r"does not accept the keyword argument\(s\) n_trees"),
        ("train_classifier", {**base, "LABEL_FIELD": "landcover"},
         r"field 'landcover' is not in the training layer; its fields are: fid, fclass, cid, value, pid, zone"),
        ("train_classifier", {**base, "FOLDS": 20}, r"only 12 groups .* too few for 20 folds"),
        ("train_classifier", {**base, "VALIDATION": 3}, r"needs a test layer"),
        ("train_classifier", {**base, "METHOD": "SVM", "KWARGS": "",
                              "OUTPUT_PROBABILITIES": "TMP/p.tif"}, r'SVC gives no class probabilities \(add \{"prob'),
        # a sample larger than the raster is no error since issue 12 (all valid pixels are used)
        ("cluster_pixels", {"METHOD_NAME": "KMeens"}, r"Did you mean KMeans\?.*Choose one"),
        ("reduce_dimensions", {"METHOD_NAME": "KMeans"}, r"KMeans is a clustering method, not a reduction method"),
        ("reduce_dimensions", {"KWARGS": "{bad json"}, r"not valid JSON"),
    ]


@pytest.mark.parametrize(("alg", "params", "message"), bad_cases())
def test_bad_input_is_explained(qgis_app, scene, tmp_path, alg, params, message):
    from qgis.core import QgsProcessingException

    params = {k: v.replace("TMP", str(tmp_path)) if isinstance(v, str) else v for k, v in params.items()}
    full = {"INPUT": scene["raster"], "OUTPUT": str(tmp_path / "o.tif"), **params}
    if alg == "train_classifier":
        full["TRAINING"] = scene["training"]
    with pytest.raises(QgsProcessingException, match=message):
        run(alg, full)
    assert not list(tmp_path.glob("*.tif"))


def test_bad_labels(qgis_app, scene, tmp_path):
    from qgis.core import QgsProcessingException

    empty = write_vector(tmp_path / "empty.gpkg", [square(5, 5), square(70, 5)], {"fclass": [None, None]})
    single = write_vector(tmp_path / "single.gpkg", [square(5, 5), square(70, 5), "POINT(500105 5799895)"],
                          {"fclass": ["water", "forest", "moss"]})
    outside = write_vector(tmp_path / "outside.gpkg", ["POINT(0 0)", "POINT(1 1)"], {"fclass": ["a", "b"]})
    cases = [(empty, r"None of the 2 feature\(s\) .*2 feature\(s\) without label"),
             (single, r"Class\(es\) moss have a single sample"),
             (outside, r"None of the 2 feature\(s\) of the training layer gives a pixel inside the raster "
                       r"\(2 feature\(s\) outside the raster\)")]
    for layer, message in cases:
        with pytest.raises(QgsProcessingException, match=message):
            run("train_classifier", {"INPUT": scene["raster"], "TRAINING": str(layer), "LABEL_FIELD": "fclass",
                                     "VALIDATION": 0, "FOLDS": 2, "OUTPUT": str(tmp_path / "o.tif")})


def test_apply_refuses_untrusted_and_wrong_bands(qgis_app, scene, tmp_path):
    from qgis.core import QgsProcessingException

    run("reduce_dimensions", {"INPUT": scene["raster"], "SAMPLE_SIZE": 500, "OUTPUT": str(tmp_path / "p.tif"),
                              "OUTPUT_MODEL": str(tmp_path / "m.joblib")})
    with pytest.raises(QgsProcessingException, match=r"expects 6 bands \(B02, .*B12\) but 2 were chosen"):
        run("apply_model", {"INPUT": scene["raster"], "BANDS": [1, 2], "MODEL": str(tmp_path / "m.joblib"),
                            "OUTPUT": str(tmp_path / "a.tif")})
    with open(tmp_path / "m.joblib", "ab") as f:
        f.write(b"\0")
    with pytest.raises(QgsProcessingException, match=r"not trusted: the file was changed after it was saved.*pickles"):
        run("apply_model", {"INPUT": scene["raster"], "MODEL": str(tmp_path / "m.joblib"),
                            "OUTPUT": str(tmp_path / "a.tif")})
    assert not (tmp_path / "a.tif").exists()


def test_extent_limits_the_map(qgis_app, scene, tmp_path):
    x0, y0 = GT[0], GT[3]
    extent = f"{x0 + 500},{x0 + 1200},{y0 - 900},{y0 - 200} [EPSG:32633]"
    out = run("cluster_pixels", {"INPUT": scene["raster"], "EXTENT": extent, "N_CLUSTERS": 2, "SAMPLE_SIZE": 500,
                                 "OUTPUT": str(tmp_path / "k.tif")})
    ds = gdal.Open(out["OUTPUT"])
    assert (ds.RasterXSize, ds.RasterYSize) == (70, 70) and ds.GetGeoTransform()[0] == x0 + 500


def test_raster_in_degrees(qgis_app, tmp_path):
    """A raster in EPSG:4326 (IAMAP crashed on degrees): training polygons in UTM are reprojected onto it and
    spatial blocks are measured in degrees, the raster's map units."""
    gt = (13.0, 0.0001, 0.0, 52.5, 0.0, -0.0001)
    rng = np.random.default_rng(1)
    data = np.where(np.arange(90)[None, None, :] < 45, 100.0, 900.0) + rng.normal(0, 5, (3, 60, 90))
    raster = write_raster(tmp_path / "geo.tif", data.astype(np.float32), geotransform=gt, epsg=4326)
    to_utm = transformer(4326, 32633)
    polygons, labels = [], []
    for col, row in ((5, 5), (25, 30), (5, 45), (50, 5), (70, 30), (55, 45)):
        corners = [to_utm.TransformPoint(gt[0] + (col + dc) * gt[1], gt[3] + (row + dr) * gt[5])[:2]
                   for dc, dr in ((0, 0), (8, 0), (8, 8), (0, 8), (0, 0))]
        polygons.append("POLYGON((" + ",".join(f"{x!r} {y!r}" for x, y in corners) + "))")
        labels.append("dark" if col < 45 else "bright")
    training = write_vector(tmp_path / "utm.gpkg", polygons, {"kind": labels}, epsg=32633)
    out = run("train_classifier", {"INPUT": str(raster), "TRAINING": str(training), "LABEL_FIELD": "kind",
                                   "METHOD": "KNeighbors", "VALIDATION": 2, "BLOCK_SIZE": 0.003, "FOLDS": 2,
                                   "OUTPUT": str(tmp_path / "c.tif"), "OUTPUT_REPORT_JSON": str(tmp_path / "r.json")})
    classes = gdal.Open(out["OUTPUT"]).ReadAsArray()
    assert (classes[:, :45] == 2).all() and (classes[:, 45:] == 1).all()  # bright = 1, dark = 2
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["validation"] == "2-fold spatial block k-fold, blocks of 0.003 map units"
    assert report["metrics"]["overall_accuracy"] == 1.0
