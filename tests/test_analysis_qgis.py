"""The feature-space analysis algorithms in real QGIS (processing.run): outputs, nodata, reference layers in another
CRS, skipped features reported, saved models applied later, and every bad input explained."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import smooth_field, write_raster, write_vector
from osgeo import gdal, osr

GT = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)
H, W = 120, 180
CLASSES = ("water", "forest", "farm")  # columns 0–59, 60–119, 120–179
NODATA = -9999.0


@pytest.fixture(autouse=True)
def private_config(tmp_path_factory, monkeypatch):
    """Signing secrets go to a temporary folder, never to the user's configuration."""
    monkeypatch.setenv("DEEPRASTER_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))


class Feedback:
    """A QgsProcessingFeedback that keeps the messages (made lazily: QGIS must be initialised first)."""

    def __new__(cls):
        from qgis.core import QgsProcessingFeedback

        class Recording(QgsProcessingFeedback):
            def __init__(self):
                super().__init__()
                self.messages: list[str] = []

            def pushInfo(self, info):  # noqa: N802 (QGIS API)
                self.messages.append(info)

            def reportError(self, error, fatalError=False):  # noqa: N802, N803 (QGIS API)
                self.messages.append(error)

        return Recording()


def run(alg: str, params: dict, feedback=None) -> dict:
    import processing

    return processing.run(f"deepraster:{alg}", params, feedback=feedback or Feedback())


def centre(col: float, row: float) -> tuple[float, float]:
    return GT[0] + (col + 0.5) * GT[1], GT[3] + (row + 0.5) * GT[5]


def square(col: int, row: int, size: int = 10) -> str:
    x0, y0 = GT[0] + col * 10, GT[3] - row * 10
    x1, y1 = x0 + size * 10, y0 - size * 10
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """6-band float32 raster: three land covers side by side, a nodata block and NaN pixels; training polygons."""
    folder = tmp_path_factory.mktemp("scene")
    rng = np.random.default_rng(0)
    looks = np.array([[800, 700, 500, 200, 100, 50], [300, 500, 300, 3000, 1500, 700],
                      [900, 1000, 1100, 2500, 2800, 2200]], np.float32)
    cover = np.repeat(np.arange(3), 60)[None, :].repeat(H, axis=0)
    data = looks[cover].transpose(2, 0, 1) + rng.normal(0, 40, (6, H, W)).astype(np.float32)
    data[:, 100:, :20] = NODATA
    data[2, 5, 5] = np.nan
    raster = write_raster(folder / "scene.tif", data, nodata=NODATA,
                          descriptions=("B02", "B03", "B04", "B08", "B11", "B12"))
    polygons, names, codes, values, ids, zones = [], [], [], [], [], []
    for k in range(3):
        for j, (c, r) in enumerate(((5, 10), (30, 40), (15, 70), (40, 5))):
            polygons.append(square(60 * k + c, r))
            names.append(CLASSES[k])
            codes.append(k + 1)
            values.append(float(looks[k, 3]) / 100.0)
            ids.append(10 * k + j)
            zones.append(f"zone {j}")
    polygons += [square(2, 2, 3), "POLYGON((0 0,10 0,10 10,0 10,0 0))"]  # no label; far outside the raster
    names += [None, "water"]
    codes += [None, 1]
    values += [None, 8.0]
    ids += [99, 98]
    zones += ["zone 0", "zone 0"]
    training = write_vector(folder / "training.gpkg", polygons,
                            {"fclass": names, "cid": codes, "value": values, "pid": ids, "zone": zones})
    return {"raster": str(raster), "data": data, "cover": cover, "training": str(training), "folder": folder}


def points_4326(folder, pixels: list[tuple[int, int]], labels: list[str], name: str = "points.gpkg",
                field: str = "kind") -> str:
    """Points at pixel centres, stored in EPSG:4326 (the algorithms reproject them to the raster's CRS)."""
    utm, wgs = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(32633)
    wgs.ImportFromEPSG(4326)
    for s in (utm, wgs):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_wgs = osr.CoordinateTransformation(utm, wgs)
    wkts = []
    for c, r in pixels:
        lon, lat, _ = to_wgs.TransformPoint(*centre(c, r))
        wkts.append(f"POINT({lon!r} {lat!r})")
    return str(write_vector(folder / name, wkts, {field: labels}, epsg=4326))


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


def bad_cases():
    base = {"LABEL_FIELD": "fclass", "PIXELS_PER_POLYGON": 10, "KWARGS": '{"n_estimators": 5}'}
    return [
        ("train_classifier", {**base, "METHOD_NAME": "RandomForst"}, r"Did you mean RandomForestClassifier\?.*Valid"),
        ("train_classifier", {**base, "KWARGS": '{"n_trees": 5}'},
         r"does not accept the keyword argument\(s\) n_trees"),
        ("train_classifier", {**base, "LABEL_FIELD": "landcover"},
         r"field 'landcover' is not in the training layer; its fields are: fid, fclass, cid, value, pid, zone"),
        ("train_classifier", {**base, "FOLDS": 20}, r"only 12 groups .* too few for 20 folds"),
        ("train_classifier", {**base, "VALIDATION": 3}, r"needs a test layer"),
        ("train_classifier", {**base, "METHOD": "SVM", "KWARGS": "",
                              "OUTPUT_PROBABILITIES": "TMP/p.tif"}, r'SVC gives no class probabilities \(add \{"prob'),
        ("cluster_pixels", {"SAMPLE_SIZE": 100000}, r"sample size \(100000 pixels\) is larger than the number of "
                                                    r"valid pixels in the raster \(21199\)"),
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
    wgs, utm = osr.SpatialReference(), osr.SpatialReference()
    wgs.ImportFromEPSG(4326)
    utm.ImportFromEPSG(32633)
    for s in (wgs, utm):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_utm = osr.CoordinateTransformation(wgs, utm)
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
