"""Classify objects (core, no QGIS): a deterministic brightness classifier in package form
(tests/classification_scene.py) on squares of three brightnesses: exact classes and confidences for points and
polygons, chips by extent + buffer or by a fixed pixel size, layers in another CRS, streaming in batches, features
outside the raster / on nodata / with empty or invalid geometries counted and left NULL, and bad inputs refused with
nothing written."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from classification_scene import CLASSES, LEVELS, UTM, centre, classifier_package, square_wkt, squares_scene
from deepraster.models.sources import open_model
from deepraster.objects.classify import ClassifyObjectsRequest, classify_objects
from deepraster.tiling.callbacks import Callbacks
from deepraster.tiling.errors import DeepRasterError, RunCancelled
from helpers import utm_to_wgs84, write_raster, write_vector
from osgeo import ogr, osr

ogr.UseExceptions()
BANDS = ("value", "other")
NAMES = {c["value"]: c["name"] for c in CLASSES}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return open_model(classifier_package(tmp_path_factory.mktemp("pkg") / "brightness"))


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, list]:
    data, truth = squares_scene()
    folder = tmp_path_factory.mktemp("scene")
    return write_raster(folder / "squares.tif", data, geotransform=UTM, descriptions=BANDS), truth


def expected_confidence(mean: float) -> float:
    """The classifier's softmax confidence for a chip whose centre has this mean (model units)."""
    scores = np.array([-40.0 * (mean - c) ** 2 for c in (0.15, 0.5, 0.85)])
    p = np.exp(scores - scores.max())
    return float(p.max() / p.sum())


def points_layer(path: Path, truth: list, epsg: int = 32633) -> Path:
    return write_vector(path, [f"POINT ({centre(x, y)[0]} {centre(x, y)[1]})" for x, y, _ in truth],
                        {"truth": [v for *_, v in truth], "label": [f"square {i}" for i in range(len(truth))]}, epsg)


def read_output(path: Path, prefix: str = "") -> list[dict]:
    ds = ogr.Open(str(path))
    layer = ds.GetLayer(0)
    rows = [{"fid": f.GetFID(), **f.items(), "wkt": f.GetGeometryRef().ExportToWkt() if f.GetGeometryRef() else None}
            for f in layer]
    for row in rows:
        row["value"], row["name"], row["conf"] = (row.pop(f"{prefix}{k}") for k in
                                                  ("class_value", "class_name", "confidence"))
    return rows


def run(scene_raster: Path, package, features: Path, out: Path, messages: list | None = None, **kwargs):
    log = messages if messages is not None else []
    callbacks = Callbacks(info=log.append, warning=log.append)
    return classify_objects(ClassifyObjectsRequest(str(scene_raster), package, str(features), str(out), device="cpu",
                                                   **kwargs), callbacks)


@pytest.mark.parametrize(("geometry", "options"), [
    ("points", {}),  # a point: the package's 16 px chip
    ("points", {"chip_pixels": 20}),
    ("points", {"buffer": 4.0}),  # 8 px on every side at 0.5 m
    ("polygons", {}),  # the square's own extent
    ("polygons", {"buffer": 2.5}),
    ("polygons", {"chip_pixels": 24}),
])
def test_exact_classes_points_and_polygons(tmp_path, package, scene, geometry, options):
    """Every feature gets its square's class, the classifier's exact confidence, its own fid, fields and geometry."""
    raster, truth = scene
    if geometry == "points":
        layer = points_layer(tmp_path / "features.gpkg", truth)
    else:
        layer = write_vector(tmp_path / "features.gpkg", [square_wkt(x, y) for x, y, _ in truth],
                             {"truth": [v for *_, v in truth], "label": [f"square {i}" for i in range(len(truth))]})
    out = tmp_path / "classified.gpkg"
    stats = run(raster, package, layer, out, **options)
    rows = read_output(out)
    assert [r["value"] for r in rows] == [v for *_, v in truth]
    assert [r["name"] for r in rows] == [NAMES[v] for *_, v in truth]
    assert [r["label"] for r in rows] == [f"square {i}" for i in range(len(truth))]
    assert [r["fid"] for r in rows] == list(range(1, len(truth) + 1))
    if options != {"chip_pixels": 24}:  # the centre half of the chip lies inside the square: exact confidences
        for row, (*_, value) in zip(rows, truth, strict=True):
            assert row["conf"] == pytest.approx(expected_confidence(LEVELS[value] / 100), abs=1e-5)
    assert stats.classified == stats.features == len(truth) and not stats.skipped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classified.gpkg", "features.gpkg"]


def test_layer_in_another_crs_is_reprojected(tmp_path, package, scene):
    """Polygons in longitude / latitude (EPSG:4326) over the UTM raster: the same classes; the copy keeps the
    layer's CRS and geometries."""
    raster, truth = scene
    to_wgs = utm_to_wgs84()
    wkts = []
    for x, y, _ in truth:
        polygon = ogr.CreateGeometryFromWkt(square_wkt(x, y))
        polygon.Transform(to_wgs)
        wkts.append(polygon.ExportToWkt())
    layer = write_vector(tmp_path / "wgs84.gpkg", wkts, {"truth": [v for *_, v in truth]}, epsg=4326)
    out = tmp_path / "classified.gpkg"
    messages: list[str] = []
    run(raster, package, layer, out, messages, buffer=1.0)
    rows = read_output(out)
    assert [r["value"] for r in rows] == [v for *_, v in truth]
    assert any("reprojected" in m for m in messages)
    ds = ogr.Open(str(out))
    assert ds.GetLayer(0).GetSpatialRef().GetAuthorityCode(None) == "4326"
    assert [r["wkt"] for r in rows] == [ogr.CreateGeometryFromWkt(w).ExportToWkt() for w in wkts]


def test_streaming_batches_bound_what_is_held(tmp_path, package, scene):
    """1200 points in batches of 7: at most 7 chips and 7 features held, one model call per 7 chips; the same
    result as batches of 64, in layer order."""
    raster, truth = scene
    many = [truth[i % len(truth)] for i in range(1200)]
    layer = points_layer(tmp_path / "many.gpkg", many)
    small = run(raster, package, layer, tmp_path / "b7.gpkg", batch_size=7)
    large = run(raster, package, layer, tmp_path / "b64.gpkg", batch_size=64)
    assert small.chips_held_max == 7 and small.features_held_max == 7
    assert small.batches == math.ceil(1200 / 7) and large.batches == math.ceil(1200 / 64)
    a, b = read_output(tmp_path / "b7.gpkg"), read_output(tmp_path / "b64.gpkg")
    assert [r["value"] for r in a] == [r["value"] for r in b] == [v for *_, v in many]
    assert [r["conf"] for r in a] == pytest.approx([r["conf"] for r in b], abs=1e-6)
    assert small.per_class == {NAMES[v]: sum(t[2] == v for t in many) for v in LEVELS}


def test_unclassifiable_features_are_null_and_counted(tmp_path, package):
    """Outside the raster, on nodata, empty, invalid (a bow tie) and a line in a mixed layer: copied with NULL class
    fields, each counted in the log; the others classified."""
    data, truth = squares_scene(seed=1)
    x0, y0, v0 = truth[0]
    data[:, :, 200:] = 255  # nodata: the squares right of x = 200
    raster = write_raster(tmp_path / "nodata.tif", data, geotransform=UTM, nodata=255, descriptions=BANDS)
    on_nodata = [t for t in truth if t[0] >= 200]
    cx, cy = centre(x0, y0)
    wkts = [f"POINT ({cx} {cy})", f"POINT ({cx - 500} {cy})", *(f"POINT ({centre(x, y)[0]} {centre(x, y)[1]})"
                                                                 for x, y, _ in on_nodata),
            "POINT EMPTY", f"POLYGON (({cx} {cy}, {cx + 5} {cy + 5}, {cx + 5} {cy}, {cx} {cy + 5}, {cx} {cy}))",
            f"LINESTRING ({cx} {cy}, {cx + 3} {cy})", "POLYGON EMPTY"]
    path = tmp_path / "mixed.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    layer = ds.CreateLayer("mixed", srs=srs, geom_type=ogr.wkbUnknown)
    for wkt in wkts:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        layer.CreateFeature(feature)
    feature = ogr.Feature(layer.GetLayerDefn())  # no geometry at all
    layer.CreateFeature(feature)
    ds = None
    messages: list[str] = []
    stats = run(raster, package, path, tmp_path / "out.gpkg", messages)
    rows = read_output(tmp_path / "out.gpkg")
    assert len(rows) == len(wkts) + 1
    assert rows[0]["value"] == v0 and all(r["value"] is None and r["conf"] is None for r in rows[1:])
    assert stats.classified == 1
    assert stats.skipped == {"outside": 1, "nodata": len(on_nodata), "empty": 3, "invalid": 1,
                             "not a point or polygon": 1}
    warning = next(m for m in messages if "were not classified" in m)
    assert f"{len(rows) - 1} of {len(rows)} features" in warning and "1 outside the raster" in warning
    assert "Fix geometries" in warning


def test_a_fixed_chip_sees_only_what_is_around_the_point(tmp_path, package):
    """A dark point inside a bright ring: a 4 px chip (centre 2 px) says dark, a 40 px chip around it (centre 20
    px) sees the ring and says medium or bright; chips reach over the raster's edge without error."""
    data = np.zeros((2, 60, 60), np.uint8)
    data[0] = 85
    data[0, 25:35, 25:35] = 15
    raster = write_raster(tmp_path / "ring.tif", data, geotransform=UTM, descriptions=BANDS)
    layer = write_vector(tmp_path / "p.gpkg", [f"POINT ({UTM[0] + 30 * 0.5} {UTM[3] - 30 * 0.5})",
                                               f"POINT ({UTM[0] + 1} {UTM[3] - 1})"])
    run(raster, package, layer, tmp_path / "small.gpkg", chip_pixels=4)
    run(raster, package, layer, tmp_path / "large.gpkg", chip_pixels=40)
    assert [r["name"] for r in read_output(tmp_path / "small.gpkg")] == ["dark", "bright"]
    assert read_output(tmp_path / "large.gpkg")[0]["name"] in ("medium", "bright")


def test_refused_with_nothing_written(tmp_path, package, scene, model_4b_l1c):
    """A layer away from the raster, every feature on nodata, a line layer, a detection or pixel-classification
    package, a raster with too few bands, a negative buffer: clear messages, no output."""
    from deepraster.models.errors import BandMappingError
    from detection_scene import detection_package

    raster, truth = scene
    folder = tmp_path / "work"
    folder.mkdir()
    away = write_vector(folder / "away.gpkg", ["POINT (100 100)"])
    lines = write_vector(folder / "lines.gpkg", ["LINESTRING (500001 5799990, 500010 5799990)"])
    points = points_layer(folder / "points.gpkg", truth)
    data = np.full((2, 50, 50), 255, np.uint8)
    empty = write_raster(folder / "empty.tif", data, geotransform=UTM, nodata=255, descriptions=BANDS)
    one_band = write_raster(folder / "one.tif", data[:1], geotransform=UTM)
    detector = open_model(detection_package(tmp_path / "detector"))
    out = folder / "out.gpkg"
    cases = [((raster, package, away, out), {}, DeepRasterError, "None of the 1 features of the layer lies in"),
             ((empty, package, points, out), {}, DeepRasterError, "No feature could be classified: 1 on nodata"),
             ((raster, package, lines, out), {}, DeepRasterError, "holds lines"),
             ((raster, detector, points, out), {}, DeepRasterError, 'object detection model.*Use "Detect objects"'),
             ((raster, open_model(model_4b_l1c), points, out), {}, DeepRasterError,
              'pixel classification model.*Use "Classify pixels"'),
             ((one_band, package, points, out), {}, BandMappingError, "expects 2 bands"),
             ((raster, package, points, out), {"buffer": -1.0}, DeepRasterError, "buffer"),
             ((raster, package, points, folder / "out.tif"), {}, DeepRasterError, r"\.gpkg"),
             ((raster, package, points, points), {}, DeepRasterError, "would overwrite the input")]
    before = sorted(p.name for p in folder.iterdir())
    for args, options, error, message in cases:
        with pytest.raises(error, match=message):
            run(*args, **options)
        assert sorted(p.name for p in folder.iterdir()) == before, message


def test_cancel_leaves_nothing(tmp_path, package, scene):
    raster, truth = scene
    layer = points_layer(tmp_path / "p.gpkg", [truth[i % len(truth)] for i in range(100)])
    calls: list[int] = []
    callbacks = Callbacks(is_cancelled=lambda: bool(calls.append(1)) or len(calls) > 2)
    with pytest.raises(RunCancelled):
        classify_objects(ClassifyObjectsRequest(str(raster), package, str(layer), str(tmp_path / "o.gpkg"),
                                                batch_size=8, device="cpu"), callbacks)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.gpkg"]


def test_fields_of_the_same_name_are_replaced_unless_prefixed(tmp_path, package, scene):
    raster, truth = scene
    layer = points_layer(tmp_path / "p.gpkg", truth)
    run(raster, package, layer, tmp_path / "first.gpkg")
    messages: list[str] = []
    run(raster, package, tmp_path / "first.gpkg", tmp_path / "again.gpkg", messages, chip_pixels=4)
    assert any("fields class_value, class_name, confidence are replaced" in m for m in messages)
    run(raster, package, tmp_path / "first.gpkg", tmp_path / "both.gpkg", field_prefix="health_")
    both = read_output(tmp_path / "both.gpkg", prefix="health_")
    assert [r["class_value"] for r in both] == [r["value"] for r in both] == [v for *_, v in truth]
    with pytest.raises(DeepRasterError, match="field prefix"):
        run(raster, package, layer, tmp_path / "bad.gpkg", field_prefix="1 bad")
