"""Classify objects through Processing: a memory layer in degrees with only its selected features, the wrong tool
for each package task refused by name, bad inputs with nothing written, ``qgis_process run``, and a Model Builder
chain (.model3) Detect objects → Classify objects run by ``qgis_process``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from classification_scene import LEVELS, UTM, centre, classifier_package, squares_scene
from helpers import REPO, write_raster, write_vector
from osgeo import ogr, osr

ogr.UseExceptions()
BANDS = ("value", "other")
NAMES = {1: "dark", 5: "medium", 9: "bright"}


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return classifier_package(tmp_path_factory.mktemp("pkg") / "brightness")


@pytest.fixture
def scene(tmp_path) -> tuple[Path, list]:
    data, truth = squares_scene(seed=4)
    return write_raster(tmp_path / "squares.tif", data, geotransform=UTM, descriptions=BANDS), truth


def classes_of(path: Path, field: str = "class_value") -> list:
    ds = ogr.Open(str(path))
    return [f.GetField(field) for f in ds.GetLayer(0)]


def test_memory_layer_in_degrees_selected_features(qgis_app, tmp_path, package, scene):
    """A memory point layer in EPSG:4326 (not a file: QGIS hands it over as a file first), 5 of its features
    selected: those 5 classified, in the layer's CRS; a temporary output is a GeoPackage."""
    import processing
    from qgis.core import (
        QgsFeature,
        QgsGeometry,
        QgsPointXY,
        QgsProcessingFeatureSourceDefinition,
        QgsProject,
        QgsVectorLayer,
    )

    raster, truth = scene
    utm, wgs = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(32633)
    wgs.ImportFromEPSG(4326)
    for srs in (utm, wgs):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    to_wgs = osr.CoordinateTransformation(utm, wgs)
    layer = QgsVectorLayer("Point?crs=EPSG:4326&field=truth:integer", "crowns", "memory")
    features = []
    for x, y, value in truth:
        lon, lat, _ = to_wgs.TransformPoint(*centre(x, y))
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(lon, lat)))
        feature.setAttributes([value])
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)[0]
    QgsProject.instance().addMapLayer(layer)
    try:
        layer.selectByIds([f.id() for f in layer.getFeatures()][:5])
        out = tmp_path / "classified.gpkg"
        result = processing.run("deepraster:classify_objects", {
            "INPUT": str(raster), "FEATURES": QgsProcessingFeatureSourceDefinition(layer.id(), True),
            "MODEL": str(package / "model.json"), "DEVICE": "cpu", "OUTPUT": str(out)})
        temporary = processing.run("deepraster:classify_objects", {
            "INPUT": str(raster), "FEATURES": layer, "MODEL": str(package / "model.json"),
            "OUTPUT": "TEMPORARY_OUTPUT"})
    finally:
        QgsProject.instance().removeMapLayer(layer.id())
    assert Path(result["OUTPUT"]) == out
    assert classes_of(out) == classes_of(out, "truth")  # QGIS hands the selection over in its own order
    assert sorted(classes_of(out)) == sorted(v for *_, v in truth[:5])
    assert classes_of(Path(temporary["OUTPUT"])) == [v for *_, v in truth]
    ds = ogr.Open(str(out))
    assert ds.GetLayer(0).GetSpatialRef().GetAuthorityCode(None) == "4326"
    ds = None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classified.gpkg", raster.name]


def test_each_package_task_meets_its_own_tool(qgis_app, tmp_path, package, scene):
    """A classification package in Classify pixels and Detect objects, a detection package in Classify objects:
    refused with a message naming the right tool; nothing written."""
    import processing
    from detection_scene import detection_package
    from qgis.core import QgsProcessingException

    raster, truth = scene
    points = write_vector(tmp_path / "p.gpkg", [f"POINT ({centre(x, y)[0]} {centre(x, y)[1]})" for x, y, _ in truth])
    detector = detection_package(tmp_path / "detector")
    before = sorted(p.name for p in tmp_path.iterdir())
    hint = 'image classification model.*Use "Classify objects"'
    with pytest.raises(QgsProcessingException, match=hint):
        processing.run("deepraster:classify_pixels", {
            "INPUT": str(raster), "MODEL": str(package / "model.json"), "DEVICE": "cpu",
            "OUTPUT_CLASSES": str(tmp_path / "c.tif"), "OUTPUT_PROBABILITIES": str(tmp_path / "p.tif")})
    with pytest.raises(QgsProcessingException, match=hint):
        processing.run("deepraster:detect_objects", {
            "INPUT": str(raster), "MODEL": str(package / "model.json"), "OUTPUT": str(tmp_path / "o.gpkg")})
    with pytest.raises(QgsProcessingException, match='object detection model.*Use "Detect objects"'):
        processing.run("deepraster:classify_objects", {
            "INPUT": str(raster), "FEATURES": str(points), "MODEL": str(detector / "model.json"),
            "OUTPUT": str(tmp_path / "o.gpkg")})
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize(("change", "message"), [
    ("away", "None of the 1 features of the layer lies in the raster"),
    ("one_band", "expects 2 bands"),
    ("tif", r"\.gpkg"),
    ("prefix", "field prefix"),
])
def test_bad_inputs_write_nothing(qgis_app, tmp_path, package, scene, change, message):
    import processing
    from qgis.core import QgsProcessingException

    raster, truth = scene
    points = write_vector(tmp_path / "p.gpkg", [f"POINT ({centre(x, y)[0]} {centre(x, y)[1]})" for x, y, _ in truth])
    params = {"INPUT": str(raster), "FEATURES": str(points), "MODEL": str(package / "model.json"), "DEVICE": "cpu",
              "OUTPUT": str(tmp_path / "o.gpkg")}
    if change == "away":
        params["FEATURES"] = str(write_vector(tmp_path / "away.gpkg", ["POINT (100 100)"]))
    elif change == "one_band":
        params["INPUT"] = str(write_raster(tmp_path / "one.tif", np.zeros((1, 30, 30), np.uint8), geotransform=UTM))
    elif change == "tif":
        params["OUTPUT"] = str(tmp_path / "o.tif")
    else:
        params["FIELD_PREFIX"] = "no spaces"
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(QgsProcessingException, match=message):
        processing.run("deepraster:classify_objects", params)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def _qgis_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "scripts" / "qgis_process"), *args], capture_output=True, text=True,
                          timeout=300)


def test_qgis_process_run(tmp_path, package, scene):
    raster, truth = scene
    polygons = write_vector(tmp_path / "squares.shp", [_square(x, y) for x, y, _ in truth],
                            {"truth": [v for *_, v in truth]})
    out = tmp_path / "classified.gpkg"
    proc = _qgis_process("run", "deepraster:classify_objects", "--", f"INPUT={raster}", f"FEATURES={polygons}",
                         f"MODEL={package}/model.json", "BUFFER=1.5", "DEVICE=cpu", f"OUTPUT={out}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert classes_of(out) == [v for *_, v in truth]
    assert f"{len(truth)} of {len(truth)} features classified" in proc.stdout + proc.stderr


def _square(x: int, y: int) -> str:
    from classification_scene import square_wkt

    return square_wkt(x, y)


def detect_then_classify_model(detector: Path, classifier: Path):
    """Model Builder: raster "scene" → Detect objects (confidence 0) → Classify objects of the boxes (fields
    ``kind_class_value`` ...) → model output "classified"."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )

    source = QgsProcessingModelChildParameterSource
    model = QgsProcessingModelAlgorithm("detect and classify", "deepraster tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("scene", "Scene"), QgsProcessingModelParameter("scene"))
    detect = QgsProcessingModelChildAlgorithm("deepraster:detect_objects")
    detect.setChildId("detect")
    classify = QgsProcessingModelChildAlgorithm("deepraster:classify_objects")
    classify.setChildId("classify")
    for child, params in ((detect, {"MODEL": str(detector / "model.json"), "CONFIDENCE": 0.0, "DEVICE": "cpu"}),
                          (classify, {"MODEL": str(classifier / "model.json"), "FIELD_PREFIX": "kind_",
                                      "DEVICE": "cpu"})):
        child.addParameterSources("INPUT", [source.fromModelParameter("scene")])
        for name, value in params.items():
            child.addParameterSources(name, [source.fromStaticValue(value)])
    classify.addParameterSources("FEATURES", [source.fromChildOutput("detect", "OUTPUT")])
    output = QgsProcessingModelOutput("classified", "Classified objects")
    output.setChildOutputName("OUTPUT")
    classify.setModelOutputs({"classified": output})
    model.addChildAlgorithm(detect)
    model.addChildAlgorithm(classify)
    return model


def test_model3_chain_detect_then_classify(qgis_app, tmp_path):
    """Squares found by the detector (dim or bright) are classified by the brightness classifier reading the same
    bands at half scale (dim → medium, bright → bright), through a .model3 file run by qgis_process."""
    from detection_scene import detection_package, place_squares, square_raster

    data, truth = square_raster(place_squares([], [], 200, 160, seed=5, extra=12), 200, 160, seed=5)
    raster = write_raster(tmp_path / "scene.tif", data, geotransform=UTM, descriptions=("value", "score"))
    detector = detection_package(tmp_path / "detector")
    classifier = classifier_package(tmp_path / "classifier", input={"bands": ["value", "score"],
                                                                    "value_scale": 0.005})
    model = tmp_path / "detect_classify.model3"
    assert detect_then_classify_model(detector, classifier).toFile(str(model))
    out = tmp_path / "classified.gpkg"
    proc = _qgis_process("run", str(model), "--", f"scene={raster}", f"classify:classified={out}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ds = ogr.Open(str(out))
    rows = [(f.GetField("class_name"), f.GetField("kind_class_name")) for f in ds.GetLayer(0)]
    assert len(rows) == len(truth) > 5
    assert all((dim_or_bright, kind) in (("dim", "medium"), ("bright", "bright")) for dim_or_bright, kind in rows)
    assert {kind for _, kind in rows} == {"medium", "bright"} and LEVELS


def test_classified_layer_is_styled_in_the_class_colours(qgis_app, tmp_path, package, scene):
    """Points as markers, polygons as outlines in the package's colours; unclassified features grey."""
    from deepraster.algorithms.styling import CategoryStyle
    from deepraster.models.sources import open_model
    from deepraster.tiling.outputs import ClassInfo
    from qgis.core import QgsVectorLayer

    classes = [ClassInfo(c.value, c.name, c.rgb) for c in open_model(package).classes]
    raster, truth = scene
    for geometry, symbol in (("POINT", "QgsMarkerSymbol"), ("POLYGON", "QgsFillSymbol")):
        wkts = [f"POINT ({centre(x, y)[0]} {centre(x, y)[1]})" if geometry == "POINT" else _square(x, y)
                for x, y, _ in truth]
        path = write_vector(tmp_path / f"{geometry}.gpkg", wkts)
        layer = QgsVectorLayer(str(path), geometry, "ogr")
        CategoryStyle(classes, "class_value", "not classified").postProcessLayer(layer, None, None)
        renderer = layer.renderer()
        assert renderer.classAttribute() == "class_value"
        categories = renderer.categories()
        assert [c.label() for c in categories] == ["dark", "medium", "bright", "not classified"]
        assert all(type(c.symbol()).__name__ == symbol for c in categories)
        if geometry == "POLYGON":  # outlines in the class colour: the imagery stays visible
            colours = [c.symbol().symbolLayer(0).strokeColor().name() for c in categories[:3]]
        else:
            colours = [c.symbol().color().name() for c in categories[:3]]
        assert colours == ["#222222", "#1f77b4", "#ffdd00"]
