"""The feature-space analysis algorithms in real QGIS (processing.run): outputs, nodata, reference layers in another
CRS, skipped features reported, saved models applied later. Bad inputs: test_analysis_qgis_errors.py."""

from __future__ import annotations

import json

import numpy as np
from analysis_scene import CLASSES, GT, NODATA, Feedback, H, W, points_4326, private_config, run, scene
from helpers import smooth_field, write_raster
from osgeo import gdal, osr

__all__ = ["private_config", "scene"]  # fixtures used by the tests below

def test_registered_with_declared_outputs(qgis_app):
    from qgis.core import QgsApplication

    registry = QgsApplication.processingRegistry()
    expected = {
        "reduce_dimensions": {"OUTPUT": "outputRaster", "OUTPUT_MODEL": "outputFile"},
        "cluster_pixels": {"OUTPUT": "outputRaster", "OUTPUT_MODEL": "outputFile"},
        "similarity_map": {"OUTPUT": "outputRaster", "OUTPUT_CLASSES": "outputRaster"},
        "train_classifier": {"OUTPUT": "outputRaster", "OUTPUT_PROBABILITIES": "outputRaster",
                             "OUTPUT_REPORT": "outputHtml", "OUTPUT_REPORT_JSON": "outputFile",
                             "OUTPUT_MODEL": "outputFile"},
        "apply_model": {"OUTPUT": "outputRaster", "OUTPUT_PROBABILITIES": "outputRaster"},
    }
    for name, outputs in expected.items():
        alg = registry.algorithmById(f"deepraster:{name}")
        assert alg is not None, name
        assert alg.group() == "Feature-space analysis" and alg.canExecute() == (True, "")
        assert {o.name(): o.type() for o in alg.outputDefinitions()} == outputs
        assert len(alg.shortHelpString()) > 300
    assert registry.algorithmById("deepraster:analysis_common") is None


def test_reduce_then_apply_saved_model(qgis_app, scene, tmp_path):
    out = run("reduce_dimensions", {"INPUT": scene["raster"], "SAMPLE_SIZE": 2000, "OUTPUT": str(tmp_path / "p.tif"),
                                    "OUTPUT_MODEL": str(tmp_path / "pca.joblib")})
    ds = gdal.Open(out["OUTPUT"])
    pca = ds.ReadAsArray()
    invalid = (scene["data"] == NODATA).any(axis=0) | np.isnan(scene["data"]).any(axis=0)
    assert pca.shape == (3, H, W) and ds.GetGeoTransform() == GT
    assert np.isnan(pca[:, invalid]).all() and np.isfinite(pca[:, ~invalid]).all()
    assert out["OUTPUT_MODEL"] == str(tmp_path / "pca.joblib")
    again = run("apply_model", {"INPUT": scene["raster"], "MODEL": out["OUTPUT_MODEL"],
                                "OUTPUT": str(tmp_path / "again.tif")})
    np.testing.assert_allclose(gdal.Open(again["OUTPUT"]).ReadAsArray(), pca, rtol=1e-6, atol=1e-6)



def test_reduce_with_umap(qgis_app, tmp_path):
    """UMAP (umap-learn) through Processing on a small generated raster: grid, nodata, and input-space neighbours
    stay neighbours in the embedding. With 400 fitted points and the exact neighbour search (the default approximate
    index costs numba about half a minute of compiling on the first call, see docs/feature-space-analysis.md)."""
    from sklearn.manifold import trustworthiness
    from sklearn.neighbors import NearestNeighbors

    h, w = 40, 56
    data = smooth_field(4, h, w, dtype=np.float32, seed=7)
    data[:, 30:, :10] = NODATA
    data[1, 3, 4] = np.nan
    raster = write_raster(tmp_path / "field.tif", data, nodata=NODATA)
    feedback = Feedback()
    out = run("reduce_dimensions", {
        "INPUT": str(raster), "METHOD": "UMAP", "N_COMPONENTS": 2, "SAMPLE_SIZE": 400,
        "KWARGS": '{"n_neighbors": 10, "force_approximation_algorithm": false}', "OUTPUT": str(tmp_path / "u.tif"),
        "OUTPUT_MODEL": str(tmp_path / "umap.joblib")}, feedback)
    ds = gdal.Open(out["OUTPUT"])
    emb = ds.ReadAsArray()
    invalid = (data == NODATA).any(axis=0) | np.isnan(data).any(axis=0)
    assert emb.shape == (2, h, w) and ds.GetGeoTransform() == GT
    assert osr.SpatialReference(wkt=ds.GetProjection()).GetAuthorityCode(None) == "32633"
    assert [ds.GetRasterBand(i + 1).GetDescription() for i in range(2)] == ["UMAP 1", "UMAP 2"]
    assert np.isnan(emb[:, invalid]).all() and np.isfinite(emb[:, ~invalid]).all()
    assert json.loads((tmp_path / "umap.joblib.json").read_text())["name"] == "UMAP"
    x = data[:, ~invalid].T
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    y = emb[:, ~invalid].T
    assert trustworthiness(x, y, n_neighbors=10) > 0.9
    rng = np.random.default_rng(0)
    picked = rng.choice(len(x), 500, replace=False)
    nearest = NearestNeighbors(n_neighbors=2).fit(x).kneighbors(x[picked], return_distance=False)[:, 1]
    near = np.linalg.norm(y[picked] - y[nearest], axis=1)
    far = np.linalg.norm(y[picked] - y[rng.permutation(picked)], axis=1)
    assert np.median(near) < 0.1 * np.median(far)
    again = run("apply_model", {"INPUT": str(raster), "MODEL": out["OUTPUT_MODEL"], "OUTPUT": str(tmp_path / "a.tif")})
    np.testing.assert_allclose(gdal.Open(again["OUTPUT"]).ReadAsArray(), emb, rtol=1e-5, atol=1e-5)

def test_cluster_kmeans_and_hdbscan_noise(qgis_app, scene, tmp_path):
    out = run("cluster_pixels", {"INPUT": scene["raster"], "N_CLUSTERS": 3, "SAMPLE_SIZE": 3000,
                                 "OUTPUT": str(tmp_path / "k.tif")})
    ds = gdal.Open(out["OUTPUT"])
    band = ds.GetRasterBand(1)
    k = band.ReadAsArray()
    assert band.GetNoDataValue() == 255 and band.GetColorTable().GetCount() >= 3
    assert band.GetCategoryNames()[:3] == ["cluster 0", "cluster 1", "cluster 2"]
    valid = k != 255
    assert not valid[100:, :20].any() and not valid[5, 5]
    for c in range(3):  # one cluster per land cover
        assert len(np.unique(k[(scene["cover"] == c) & valid])) == 1
    feedback = Feedback()
    out = run("cluster_pixels", {"INPUT": scene["raster"], "METHOD": "HDBSCAN", "KWARGS": '{"min_cluster_size": 30}',
                                 "SAMPLE_SIZE": 1500, "OUTPUT": str(tmp_path / "h.tif")}, feedback)
    h = gdal.Open(out["OUTPUT"]).ReadAsArray()
    assert any("finds the number of clusters itself" in m for m in feedback.messages)
    assert any("nearest sample pixel" in m for m in feedback.messages)
    assert 3 <= len(np.unique(h[h != 255])) <= 5


def test_similarity_points_in_another_crs(qgis_app, scene, tmp_path):
    """Points in EPSG:4326 are reprojected; one outside the raster and one on nodata are reported and skipped."""
    pixels = [(10, 20), (30, 50), (70, 20), (90, 60), (150, 30), (170, 90), (5, 110), (10, 500)]
    labels = ["water", "water", "forest", "forest", "farm", "farm", "water", "water"]
    points = points_4326(tmp_path, pixels, labels)
    feedback = Feedback()
    out = run("similarity_map", {"INPUT": scene["raster"], "REFERENCE": points, "CLASS_FIELD": "kind",
                                 "THRESHOLD": 0.99, "OUTPUT": str(tmp_path / "s.tif"),
                                 "OUTPUT_CLASSES": str(tmp_path / "c.tif")}, feedback)
    log = " ".join(feedback.messages)
    assert "7 feature(s) give 6 usable pixel(s); skipped: 1 feature(s) outside the raster; 1 pixel(s) on nodata" in log
    ds = gdal.Open(out["OUTPUT"])
    sim = ds.ReadAsArray()
    assert [ds.GetRasterBand(i + 1).GetDescription() for i in range(3)] == [
        "similarity to farm", "similarity to forest", "similarity to water"]
    cover = scene["cover"]
    valid = np.isfinite(sim).all(axis=0)
    for band, name in enumerate(("farm", "forest", "water")):
        own = cover == CLASSES.index(name)
        assert sim[band][own & valid].mean() > 0.99 > sim[band][~own & valid].mean()
    classes = gdal.Open(out["OUTPUT_CLASSES"]).ReadAsArray()
    assert (classes[(cover == 0) & valid] == 3).mean() > 0.9  # water is class 3 (alphabetical)
    assert (classes[~valid] == 255).all()


def test_train_classify_report_probabilities_and_apply(qgis_app, scene, tmp_path):
    feedback = Feedback()
    out = run("train_classifier", {
        "INPUT": scene["raster"], "TRAINING": scene["training"], "LABEL_FIELD": "fclass", "METHOD": "RandomForest",
        "KWARGS": '{"n_estimators": 20}', "VALIDATION": 1, "FOLDS": 3, "PIXELS_PER_POLYGON": 30,
        "OUTPUT": str(tmp_path / "cls.tif"), "OUTPUT_PROBABILITIES": str(tmp_path / "p.tif"),
        "OUTPUT_REPORT": str(tmp_path / "r.html"), "OUTPUT_REPORT_JSON": str(tmp_path / "r.json"),
        "OUTPUT_MODEL": str(tmp_path / "m.joblib")}, feedback)
    log = " ".join(feedback.messages)
    assert ("12 feature(s) give 360 usable pixel(s); skipped: 1 feature(s) outside the raster; 1 feature(s) without "
            "label") in log
    ds = gdal.Open(out["OUTPUT"])
    band = ds.GetRasterBand(1)
    cls = band.ReadAsArray()
    assert band.GetNoDataValue() == 255  # (GDAL 3.6 loads the .aux.xml holding category names only on such calls)
    assert band.GetCategoryNames()[1:4] == ["farm", "forest", "water"]  # text labels: 1, 2, 3 alphabetically
    valid = cls != 255
    expected = np.array([3, 2, 1])[scene["cover"]]
    assert (cls[valid] == expected[valid]).mean() > 0.99 and not valid[100:, :20].any()
    prob = gdal.Open(out["OUTPUT_PROBABILITIES"]).ReadAsArray()
    np.testing.assert_allclose(prob[:, valid].sum(axis=0), 1.0, atol=1e-5)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["validation"] == "3-fold group k-fold (no group on both sides)"
    assert report["metrics"]["overall_accuracy"] > 0.95 and len(report["folds"]) == 3
    assert report["samples"]["groups"] == 12
    assert "Confusion matrix" in (tmp_path / "r.html").read_text()
    applied = run("apply_model", {"INPUT": scene["raster"], "MODEL": out["OUTPUT_MODEL"],
                                  "OUTPUT": str(tmp_path / "a.tif"), "OUTPUT_PROBABILITIES": str(tmp_path / "ap.tif")})
    np.testing.assert_array_equal(gdal.Open(applied["OUTPUT"]).ReadAsArray(), cls)
    np.testing.assert_allclose(gdal.Open(applied["OUTPUT_PROBABILITIES"]).ReadAsArray(), prob)


def test_integer_labels_keep_their_values_and_spatial_folds(qgis_app, scene, tmp_path):
    out = run("train_classifier", {
        "INPUT": scene["raster"], "TRAINING": scene["training"], "LABEL_FIELD": "cid", "METHOD": "KNeighbors",
        "VALIDATION": 2, "BLOCK_SIZE": 300.0, "FOLDS": 3, "PIXELS_PER_POLYGON": 20,
        "OUTPUT": str(tmp_path / "c.tif"), "OUTPUT_REPORT_JSON": str(tmp_path / "r.json")})
    cls = gdal.Open(out["OUTPUT"]).ReadAsArray()
    assert set(np.unique(cls)) == {1, 2, 3, 255}
    assert json.loads((tmp_path / "r.json").read_text())["validation"].startswith("3-fold spatial block k-fold")


def test_group_field(qgis_app, scene, tmp_path):
    """Groups from an attribute: 4 zones (each holding one polygon of every class) → 4 groups, whole zones per fold."""
    run("train_classifier", {
        "INPUT": scene["raster"], "TRAINING": scene["training"], "LABEL_FIELD": "fclass", "METHOD": "KNeighbors",
        "VALIDATION": 1, "GROUP_FIELD": "zone", "FOLDS": 4, "PIXELS_PER_POLYGON": 10,
        "OUTPUT": str(tmp_path / "c.tif"), "OUTPUT_REPORT_JSON": str(tmp_path / "r.json")})
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["samples"]["groups"] == 4 and [f["test_groups"] for f in report["folds"]] == [1, 1, 1, 1]
    assert [f["test"] for f in report["folds"]] == [30, 30, 30, 30]


def test_regression(qgis_app, scene, tmp_path):
    out = run("train_classifier", {
        "INPUT": scene["raster"], "TRAINING": scene["training"], "LABEL_FIELD": "value", "METHOD": "Linear",
        "VALIDATION": 0, "FOLDS": 3, "PIXELS_PER_POLYGON": 20, "OUTPUT": str(tmp_path / "v.tif"),
        "OUTPUT_REPORT_JSON": str(tmp_path / "r.json")})
    ds = gdal.Open(out["OUTPUT"])
    v = ds.ReadAsArray()
    assert ds.GetRasterBand(1).GetDescription() == "predicted value"
    assert abs(np.nanmean(v[scene["cover"] == 1]) - 30.0) < 1.0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["task"] == "regression" and report["metrics"]["r2"] > 0.9


def test_independent_test_layer(qgis_app, scene, tmp_path):
    test_points = points_4326(tmp_path, [(10, 20), (70, 20), (150, 30), (100, 100)],
                              ["water", "forest", "farm", "forest"], "test.gpkg", "fclass")
    out = run("train_classifier", {
        "INPUT": scene["raster"], "TRAINING": scene["training"], "LABEL_FIELD": "fclass", "VALIDATION": 3,
        "TEST_LAYER": test_points, "PIXELS_PER_POLYGON": 10, "KWARGS": '{"n_estimators": 10}',
        "OUTPUT": str(tmp_path / "c.tif"), "OUTPUT_REPORT_JSON": str(tmp_path / "r.json")},
        Feedback())
    assert out["OUTPUT"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["metrics"]["n"] == 4 and report["metrics"]["overall_accuracy"] == 1.0
