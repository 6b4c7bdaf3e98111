"""Evaluate a class map (deepraster:evaluate_classes) and the shared metrics module: the metrics equal
scikit-learn's, a class raster against itself scores 1, known disagreements give exact counts, the polygon path on
the real 10 m Sentinel-2 scene with the real OSM land-use polygons equals a direct rasterisation scored by
scikit-learn, and bad inputs are explained with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import DATA, write_raster, write_vector
from osgeo import gdal, ogr

OSM = DATA / "s2" / "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg"
OSM_CLASSES = ("meadow", "wetland", "farm", "scrub", "forest", "water", "residential", "grass")
GT = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)


def run(params: dict) -> dict:
    import processing

    return processing.run("deepraster:evaluate_classes", params)


def name_classes(path: Path, names: tuple[str, ...]) -> Path:
    """Give band 1 of ``path`` category names (value 0 unnamed, 1.. = ``names``) and a colour table."""
    ds = gdal.Open(str(path), gdal.GA_Update)
    band = ds.GetRasterBand(1)
    table = gdal.ColorTable()
    for value in range(len(names) + 1):
        table.SetColorEntry(value, (30 * value % 256, 80, 255 - 20 * value, 255))
    band.SetColorTable(table)
    band.SetCategoryNames(["", *names])  # after the colour table, as tiling.writer does (GTiff keeps both)
    band = ds = None  # closed: the names are saved (in the .aux.xml beside a GeoTIFF)
    return path


def test_metrics_equal_scikit_learn():
    from deepraster.analysis.metrics import ConfusionMatrix
    from sklearn.metrics import (
        accuracy_score,
        cohen_kappa_score,
        confusion_matrix,
        jaccard_score,
        precision_recall_fscore_support,
    )

    rng = np.random.default_rng(7)
    for trial in range(20):
        k = int(rng.integers(2, 8))
        values = np.array([0, 3, 4, 7, 9, 12, 20, 40])[:k]
        ref = values[rng.integers(0, k, 5000)]
        pred = np.where(rng.random(5000) < 0.6, ref, values[rng.integers(0, k, 5000)])
        ref[rng.random(5000) < 0.1] = 255  # ignored
        if trial == 0:
            pred[pred == values[-1]] = values[0]  # a class never predicted
        acc = ConfusionMatrix(ignore=255)
        for r, p in zip(np.array_split(ref, 9), np.array_split(pred, 9), strict=True):
            acc.update(r, p)  # window by window
        keep = ref != 255
        y, p = ref[keep], pred[keep]
        labels = sorted(set(y) | set(p))
        assert acc.classes.tolist() == labels
        assert acc.matrix.dtype == np.int64
        assert (acc.matrix == confusion_matrix(y, p, labels=labels)).all()
        s = acc.scores()
        pr, rc, f1, support = precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
        iou = jaccard_score(y, p, labels=labels, average=None, zero_division=0)
        assert s["overall_accuracy"] == pytest.approx(accuracy_score(y, p), abs=1e-12)
        assert s["kappa"] == pytest.approx(cohen_kappa_score(y, p), abs=1e-12)
        np.testing.assert_allclose([c["iou"] for c in s["per_class"]], iou, atol=1e-12)
        np.testing.assert_allclose([c["precision"] for c in s["per_class"]], pr, atol=1e-12)
        np.testing.assert_allclose([c["recall"] for c in s["per_class"]], rc, atol=1e-12)
        np.testing.assert_allclose([c["f1"] for c in s["per_class"]], f1, atol=1e-12)
        assert [c["support"] for c in s["per_class"]] == support.tolist()
        present = support > 0
        assert s["miou"] == pytest.approx(float(np.mean(iou[present])), abs=1e-12)
        json.dumps(s)  # plain types only


def test_the_validation_report_keeps_its_former_scikit_learn_values():
    """analysis.validation.classification_metrics now calls analysis.metrics: same dict, same floats as the
    scikit-learn calls it made before."""
    from deepraster.analysis.validation import classification_metrics
    from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(1)
    for trial in range(30):
        k, n = int(rng.integers(2, 6)), int(rng.integers(5, 300))
        y = rng.integers(0, k, n)
        pred = y.copy() if trial % 10 == 0 else np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
        names, labels = [f"c{i}" for i in range(k)], list(range(k))
        p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
        kappa = cohen_kappa_score(y, pred, labels=labels)
        assert classification_metrics(y, pred, names) == {
            "overall_accuracy": float(accuracy_score(y, pred)), "kappa": 0.0 if np.isnan(kappa) else float(kappa),
            "macro_f1": float(np.mean([f[i] for i in sorted(set(y.tolist()))])),
            "per_class": [{"class": names[i], "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                           "support": int(s[i])} for i in labels],
            "confusion_matrix": {"labels": names, "rows": "reference", "columns": "predicted",
                                 "matrix": confusion_matrix(y, pred, labels=labels).tolist()},
            "n": n}


def test_class_map_against_itself_scores_one(qgis_app, tmp_path):
    rng = np.random.default_rng(0)
    classes = rng.integers(1, 4, (200, 300)).astype(np.uint8)
    classes[:5] = 255
    path = name_classes(write_raster(tmp_path / "classes.tif", classes, nodata=255), ("clear", "cloud", "shadow"))
    out = run({"INPUT": str(path), "REFERENCE_RASTER": str(path), "OUTPUT_REPORT": str(tmp_path / "r.html"),
               "OUTPUT_REPORT_JSON": str(tmp_path / "r.json")})
    assert (out["OA"], out["MIOU"], out["KAPPA"]) == (1.0, 1.0, 1.0)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["pixels"]["evaluated"] == 195 * 300
    assert [c["name"] for c in report["classes"]] == ["clear", "cloud", "shadow"]
    assert all(c["colour"].startswith("#") for c in report["classes"])
    page = (tmp_path / "r.html").read_text()
    assert "Confusion matrix" in page and "cloud (2)" in page and "<script" not in page


def test_known_disagreements_give_exact_counts(qgis_app, tmp_path):
    classes = np.ones((100, 120), np.uint8)
    classes[:, 60:] = 2
    classes[90:, :] = 0  # nodata of the class raster
    ref = classes.copy()
    ref[90:, :] = 1  # labelled, but class-raster nodata: left out
    ref[0:10, 0:10] = 2  # 100 px: reference 2, predicted 1
    ref[20:25, 60:80] = 3  # 100 px: reference 3, predicted 2
    ref[50:60, 0:120] = 9  # reference nodata
    class_path = write_raster(tmp_path / "c.tif", classes, nodata=0)
    ref_path = write_raster(tmp_path / "ref.tif", ref, nodata=9)
    out = run({"INPUT": str(class_path), "REFERENCE_RASTER": str(ref_path),
               "OUTPUT_REPORT": str(tmp_path / "r.html"), "OUTPUT_REPORT_JSON": str(tmp_path / "r.json")})
    report = json.loads((tmp_path / "r.json").read_text())
    cm = report["metrics"]["confusion_matrix"]
    assert cm["values"] == [1, 2, 3]
    n1 = 80 * 60 - 100  # class 1 region outside the nodata rows, the reference nodata strip and the 2-square
    n2 = 80 * 60 - 100
    assert cm["matrix"] == [[n1, 0, 0], [100, n2, 0], [0, 100, 0]]
    assert report["pixels"] == {"evaluated": 12000 - 2 * 1200, "reference": 12000 - 1200,
                                "reference_on_class_nodata": 1200}
    assert out["OA"] == pytest.approx((n1 + n2) / 9600)
    iou = [n1 / (n1 + 100), n2 / (n2 + 200), 0.0]
    assert out["MIOU"] == pytest.approx(np.mean(iou))
    # over an extent: the top-left 20 × 20 px only
    x0, y0 = GT[0], GT[3]
    extent = f"{x0},{x0 + 200},{y0 - 200},{y0} [EPSG:32633]"
    run({"INPUT": str(class_path), "REFERENCE_RASTER": str(ref_path), "EXTENT": extent,
         "OUTPUT_REPORT": str(tmp_path / "e.html"), "OUTPUT_REPORT_JSON": str(tmp_path / "e.json")})
    cm = json.loads((tmp_path / "e.json").read_text())["metrics"]["confusion_matrix"]
    assert cm["values"] == [1, 2] and cm["matrix"] == [[300, 0], [100, 0]]


def test_reference_on_another_grid_is_resampled_by_nearest_neighbour(qgis_app, tmp_path):
    rng = np.random.default_rng(3)
    classes = rng.integers(1, 5, (120, 160)).astype(np.uint8)
    coarse = rng.integers(1, 5, (40, 50)).astype(np.uint8)  # 30 m, offset by 15 m, partly outside
    class_path = write_raster(tmp_path / "c.tif", classes, nodata=0)
    ref_path = write_raster(tmp_path / "ref.tif", coarse, nodata=0,
                            geotransform=(GT[0] + 15.0, 30.0, 0.0, GT[3] - 15.0, 0.0, -30.0))
    out = run({"INPUT": str(class_path), "REFERENCE_RASTER": str(ref_path),
               "OUTPUT_REPORT": str(tmp_path / "r.html"), "OUTPUT_REPORT_JSON": str(tmp_path / "r.json")})
    rows, cols = np.mgrid[0:120, 0:160]
    r, c = np.floor((rows * 10 + 5 - 15) / 30).astype(int), np.floor((cols * 10 + 5 - 15) / 30).astype(int)
    inside = (r >= 0) & (c >= 0) & (r < 40) & (c < 50)
    expected = np.zeros((4, 4), np.int64)
    np.add.at(expected, (coarse[r[inside], c[inside]] - 1, classes[inside] - 1), 1)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["metrics"]["confusion_matrix"]["matrix"] == expected.tolist()
    assert out["OA"] == pytest.approx(np.trace(expected) / expected.sum())


@pytest.fixture(scope="module")
def osm_class_raster(tmp_path_factory, s2_10m) -> Path:
    """A class raster on the real 10 m grid: eight classes from quantiles of the scene's NIR / red ratio, named
    as the OSM land-use classes; the first 40 rows nodata."""
    ds = gdal.Open(str(s2_10m))
    red, nir = (ds.GetRasterBand(i).ReadAsArray().astype(np.float32) for i in (3, 7))
    ratio = nir / np.maximum(red, 1)
    classes = (np.digitize(ratio, np.quantile(ratio, np.linspace(0, 1, 9)[1:-1])) + 1).astype(np.uint8)
    classes[:40] = 0
    path = tmp_path_factory.mktemp("osm") / "classes.tif"
    write_raster(path, classes, geotransform=ds.GetGeoTransform(), nodata=0)
    return name_classes(path, OSM_CLASSES)


def direct_confusion(class_path: Path, polygons: Path, lookup: dict[str, int]) -> np.ndarray:
    """Rasterise every polygon at once on the class raster's grid (later over earlier) and score with sklearn."""
    from sklearn.metrics import confusion_matrix

    src = ogr.Open(str(polygons))
    layer = src.GetLayer(0)
    cls = gdal.Open(str(class_path))
    mem = gdal.GetDriverByName("MEM").Create("", cls.RasterXSize, cls.RasterYSize, 1, gdal.GDT_Int32)
    mem.SetGeoTransform(cls.GetGeoTransform())
    mem.SetProjection(cls.GetProjection())
    mem.GetRasterBand(1).Fill(-1)
    vector = ogr.GetDriverByName("Memory").CreateDataSource("")
    copy = vector.CreateLayer("v", srs=layer.GetSpatialRef(), geom_type=ogr.wkbUnknown)
    copy.CreateField(ogr.FieldDefn("v", ogr.OFTInteger))
    for feature in layer:
        out = ogr.Feature(copy.GetLayerDefn())
        out.SetGeometry(feature.GetGeometryRef().Clone())
        out.SetField("v", lookup[feature.GetField("fclass")])
        copy.CreateFeature(out)
    gdal.RasterizeLayer(mem, [1], copy, options=["ATTRIBUTE=v"])
    ref, pred = mem.ReadAsArray(), cls.GetRasterBand(1).ReadAsArray()
    keep = (ref >= 0) & (pred != 0)
    return confusion_matrix(ref[keep], pred[keep], labels=list(range(1, 9)))


def test_osm_polygons_on_the_real_scene_equal_a_direct_rasterisation(qgis_app, tmp_path, osm_class_raster,
                                                                     monkeypatch):
    from deepraster.analysis import evaluation

    monkeypatch.setattr(evaluation, "BLOCK", 300)  # many windows, cut across polygons
    out = run({"INPUT": str(osm_class_raster), "REFERENCE": str(OSM), "CLASS_FIELD": "fclass",
               "OUTPUT_REPORT": str(tmp_path / "r.html"), "OUTPUT_REPORT_JSON": str(tmp_path / "r.json")})
    report = json.loads((tmp_path / "r.json").read_text())
    expected = direct_confusion(osm_class_raster, OSM, {n: i + 1 for i, n in enumerate(OSM_CLASSES)})
    cm = report["metrics"]["confusion_matrix"]
    present = [v - 1 for v in cm["values"]]
    assert np.array_equal(np.array(cm["matrix"]), expected[np.ix_(present, present)])
    assert expected.sum() == report["pixels"]["evaluated"]
    labelled = report["pixels"]["reference"] / (1536 * 768)
    assert 0.25 < labelled < 0.35  # about a third of the scene, as DATA.md says
    assert out["OA"] == pytest.approx(np.trace(expected) / expected.sum())
    assert set(cm["labels"]) <= set(OSM_CLASSES)


def test_polygons_in_another_crs_are_reprojected(qgis_app, tmp_path, osm_class_raster):
    wgs84 = tmp_path / "osm_4326.gpkg"
    gdal.VectorTranslate(str(wgs84), str(OSM), dstSRS="EPSG:4326", reproject=True)
    utm = run({"INPUT": str(osm_class_raster), "REFERENCE": str(OSM), "CLASS_FIELD": "fclass",
               "OUTPUT_REPORT": str(tmp_path / "a.html")})
    geo = run({"INPUT": str(osm_class_raster), "REFERENCE": str(wgs84), "CLASS_FIELD": "fclass",
               "OUTPUT_REPORT": str(tmp_path / "b.html")})
    assert geo["OA"] == pytest.approx(utm["OA"], abs=0.002)
    assert geo["MIOU"] == pytest.approx(utm["MIOU"], abs=0.002)


def bad_cases(tmp: Path, classes: Path) -> list[tuple[dict, str]]:
    far = write_raster(tmp / "far.tif", np.ones((10, 10), np.uint8), geotransform=(900000.0, 10, 0, 5000000.0, 0, -10))
    square = "POLYGON((900000 5000000,900100 5000000,900100 4999900,900000 4999900,900000 5000000))"
    far_polygons = write_vector(tmp / "far.gpkg", [square], {"cls": [1]})
    x0, y0 = GT[0], GT[3]
    corner = f"POLYGON(({x0 + 400} {y0 - 300},{x0 + 600} {y0 - 300},{x0 + 600} {y0 - 500},{x0 + 400} {y0 - 500},"\
             f"{x0 + 400} {y0 - 300}))"  # the bottom-right corner of the 60 × 50 px class raster
    names = write_vector(tmp / "names.gpkg", [corner], {"cls": ["glacier"]})
    values = write_vector(tmp / "values.gpkg", [corner], {"cls": [1]})
    return [
        ({"REFERENCE_RASTER": str(far)}, r"reference raster .* does not overlap the class raster"),
        ({"REFERENCE": str(far_polygons), "CLASS_FIELD": "cls"}, r"No reference polygon overlaps the class raster"),
        ({"REFERENCE": str(OSM), "CLASS_FIELD": "landcover"},
         r"field 'landcover' is not in the reference layer; its fields are: .*fclass"),
        ({"REFERENCE": str(names), "CLASS_FIELD": "cls"},
         r"No name of the class field \(glacier\) matches a class of the class raster \(meadow, wetland"),
        ({"REFERENCE": str(values), "CLASS_FIELD": "cls", "EXTENT": f"{x0},{x0 + 100},{y0 - 100},{y0} [EPSG:32633]"},
         r"No reference pixel lies inside the extent"),
        ({}, r"Choose one reference: reference polygons"),
        ({"REFERENCE_RASTER": str(classes), "REFERENCE": str(OSM), "CLASS_FIELD": "fclass"},
         r"Choose one reference:"),
    ]


def test_bad_inputs_are_explained_and_nothing_is_written(qgis_app, tmp_path):
    from qgis.core import QgsProcessingException

    classes = name_classes(write_raster(tmp_path / "c.tif", np.ones((50, 60), np.uint8), nodata=0), OSM_CLASSES)
    for params, message in bad_cases(tmp_path, classes):
        report = tmp_path / "out" / "r.html"
        report.parent.mkdir(exist_ok=True)
        with pytest.raises(QgsProcessingException, match=message):
            run({"INPUT": str(classes), "OUTPUT_REPORT": str(report),
                 "OUTPUT_REPORT_JSON": str(tmp_path / "out" / "r.json"), **params})
        assert not list(report.parent.iterdir()), params


def test_validation_chips_of_an_export_are_the_reference(qgis_app, tmp_path):
    """CHIPS = an export folder: exactly the labelled pixels of its validation chips are scored (the pixels a
    training report scores), against a class raster on the raster's grid."""
    import processing

    rng = np.random.default_rng(5)
    rows, cols = np.mgrid[0:96, 0:128]
    stripes = ((rows // 4 + cols // 4) % 3).astype(np.uint8)  # three classes in every chip
    labels = write_raster(tmp_path / "labels.tif", stripes[None])
    image = write_raster(tmp_path / "image.tif", rng.integers(0, 1000, (3, 96, 128)).astype(np.uint16))
    chips = tmp_path / "chips"
    processing.run("deepraster:export_training_data", {
        "INPUT": str(image), "LABEL_RASTER": str(labels), "CHIP_SIZE": 32, "BLOCK_SIZE": 640, "SEED": 0,
        "OUTPUT": str(chips)})
    manifest = json.loads((chips / "manifest.json").read_text())
    predicted = stripes.copy()
    predicted[::2][predicted[::2] == 2] = 0  # class 2 called 0 on every other row
    classes = write_raster(tmp_path / "classes.tif", predicted[None])
    report = tmp_path / "r.json"
    out = run({"INPUT": str(classes), "CHIPS": str(chips), "OUTPUT_REPORT": str(tmp_path / "r.html"),
               "OUTPUT_REPORT_JSON": str(report)})
    mask = np.zeros(stripes.shape, bool)
    for chip in manifest["chips"]:
        if chip["split"] == "validation":
            col, row, width, height = chip["window"]
            mask[row:row + height, col:col + width] = True
    assert mask.any() and not mask.all()
    expected_oa = float(np.mean(predicted[mask] == stripes[mask]))
    result = json.loads(report.read_text())
    assert result["pixels"]["evaluated"] == mask.sum()
    assert expected_oa < 1 and out["OA"] == pytest.approx(expected_oa)
    assert result["metrics"]["overall_accuracy"] == pytest.approx(expected_oa)
