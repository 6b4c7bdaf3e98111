""""Classify pixels" in real QGIS (processing.run, the Model Builder's model format): outputs, styling, bad input.

Runs on the real 30 m Sentinel-2 scene with the real ukis-csmask 6-band U-Net (three 256 px tiles, a few seconds).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import S2_BANDS, cloud_mask_model, smooth_field
from osgeo import gdal

ALG = "deepraster:classify_pixels"


def run(params: dict, feedback=None) -> dict:
    import processing
    from qgis.core import QgsProcessingFeedback

    return processing.run(ALG, params, feedback=feedback or QgsProcessingFeedback())


def leftovers(folder: Path) -> list[str]:
    """Files in ``folder`` (temporary .partial files included)."""
    return sorted(p.name for p in folder.iterdir())


def test_provider_lists_algorithm(qgis_app):
    from qgis.core import QgsApplication

    provider = QgsApplication.processingRegistry().providerById("deepraster")
    assert provider is not None and provider.name() == "Deep Raster"
    alg = QgsApplication.processingRegistry().algorithmById(ALG)
    assert alg.displayName() == "Classify pixels"
    assert alg.canExecute() == (True, "")
    outputs = {o.name(): o.type() for o in alg.outputDefinitions()}
    assert outputs == {"OUTPUT_CLASSES": "outputRaster", "OUTPUT_PROBABILITIES": "outputRaster"}
    assert "Classifies every pixel" in alg.shortHelpString()


def test_classify_real_scene(qgis_app, s2_30m, model_6b_l1c, tmp_path):
    """Class and probability rasters: the input's grid and CRS, class colours and names, probabilities sum to 1."""
    out = run({"INPUT": str(s2_30m), "MODEL": str(model_6b_l1c), "OUTPUT_CLASSES": str(tmp_path / "classes.tif"),
               "OUTPUT_PROBABILITIES": str(tmp_path / "prob.tif")})
    src, cls, prob = (gdal.Open(str(p)) for p in (s2_30m, out["OUTPUT_CLASSES"], out["OUTPUT_PROBABILITIES"]))
    for ds in (cls, prob):
        assert (ds.RasterXSize, ds.RasterYSize) == (src.RasterXSize, src.RasterYSize)
        assert ds.GetGeoTransform() == src.GetGeoTransform()
        assert ds.GetSpatialRef().IsSame(src.GetSpatialRef())
    band = cls.GetRasterBand(1)
    assert band.GetNoDataValue() == 255
    assert band.GetCategoryNames()[:3] == ["clear", "cloud", "cloud shadow"]
    table = band.GetColorTable()
    assert table is not None and table.GetCount() >= 3
    classes = band.ReadAsArray()
    fractions = np.bincount(classes.ravel(), minlength=256)[:3] / classes.size
    assert fractions.sum() == pytest.approx(1.0)  # every pixel classified, no nodata
    assert 0.6 < fractions[0] < 0.95 and fractions[1] > 0.02 and fractions[2] > 0.02
    p = prob.ReadAsArray()
    assert p.shape == (3, 256, 512) and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(np.argmax(p, axis=0), classes)
    assert [prob.GetRasterBand(i + 1).GetDescription() for i in range(3)] == [
        "probability of clear", "probability of cloud", "probability of cloud shadow"]


def test_percent_probabilities_and_explicit_bands(qgis_app, s2_30m, model_6b_l1c, tmp_path):
    """Explicit band numbers equal to the name matching give the same classes; uint8 percent output is 0–100."""
    out = run({"INPUT": str(s2_30m), "MODEL": str(model_6b_l1c), "BANDS": [1, 2, 3, 7, 9, 10],
               "PROBABILITY_TYPE": 1, "OUTPUT_CLASSES": str(tmp_path / "c.tif"),
               "OUTPUT_PROBABILITIES": str(tmp_path / "p.tif")})
    p = gdal.Open(out["OUTPUT_PROBABILITIES"]).ReadAsArray()
    assert p.dtype == np.uint8 and p.max() <= 100
    np.testing.assert_allclose(p.sum(axis=0), 100, atol=2)


def test_extent_limits_output(qgis_app, s2_30m, model_6b_l1c, tmp_path):
    """An extent gives an output covering just that extent, snapped to the input's pixels."""
    src = gdal.Open(str(s2_30m))
    x0, px, _, y0, _, py = src.GetGeoTransform()
    extent = f"{x0 + 100 * px},{x0 + 300 * px},{y0 + 200 * py},{y0 + 50 * py} [EPSG:32633]"
    out = run({"INPUT": str(s2_30m), "MODEL": str(model_6b_l1c), "EXTENT": extent,
               "OUTPUT_CLASSES": str(tmp_path / "c.tif")})
    ds = gdal.Open(out["OUTPUT_CLASSES"])
    assert (ds.RasterXSize, ds.RasterYSize) == (200, 150)
    assert ds.GetGeoTransform()[0] == pytest.approx(x0 + 100 * px)
    assert ds.GetGeoTransform()[3] == pytest.approx(y0 + 50 * py)
    assert (ds.ReadAsArray() != 255).all()


def test_ndwi_mask_makes_land_nodata(qgis_app, s2_30m, model_6b_l1c, tmp_path):
    """Keeping water only: pixels with NDWI below the threshold become nodata in both outputs."""
    out = run({"INPUT": str(s2_30m), "MODEL": str(model_6b_l1c), "MASK": 1, "NDWI_THRESHOLD": 0.0,
               "OUTPUT_CLASSES": str(tmp_path / "c.tif"), "OUTPUT_PROBABILITIES": str(tmp_path / "p.tif")})
    raw = gdal.Open(str(s2_30m)).ReadAsArray().astype(np.float64)
    green, nir = raw[S2_BANDS.index("B03")], raw[S2_BANDS.index("B08")]
    water = (green - nir) / (green + nir) >= 0.0
    classes = gdal.Open(out["OUTPUT_CLASSES"]).ReadAsArray()
    prob = gdal.Open(out["OUTPUT_PROBABILITIES"]).ReadAsArray()
    assert 0 < water.sum() < water.size
    np.testing.assert_array_equal(classes == 255, ~water)
    assert np.isnan(prob[:, ~water]).all() and np.isfinite(prob[:, water]).all()


def test_nodata_in_nodata_out_and_float_epsg4326(qgis_app, model_4b_l1c, make_raster, tmp_path):
    """A float32 raster in degrees (EPSG:4326) with a nodata block: runs, keeps its grid, nodata stays nodata."""
    data = smooth_field(4, 300, 420, dtype=np.float32) / 10000.0
    data[:, 50:120, 60:200] = -9999.0
    path = make_raster("geo.tif", data, geotransform=(13.0, 0.0001, 0.0, 52.5, 0.0, -0.0001), epsg=4326,
                       nodata=-9999.0, descriptions=("B02", "B03", "B04", "B08"))
    out = run({"INPUT": str(path), "MODEL": str(model_4b_l1c), "VALUE_SCALE": 1.0,
               "OUTPUT_CLASSES": str(tmp_path / "c.tif")})
    ds = gdal.Open(out["OUTPUT_CLASSES"])
    assert ds.GetGeoTransform() == (13.0, 0.0001, 0.0, 52.5, 0.0, -0.0001)
    assert ds.GetSpatialRef().GetAuthorityCode(None) == "4326"
    classes = ds.ReadAsArray()
    nodata = np.zeros(classes.shape, bool)
    nodata[50:120, 60:200] = True
    np.testing.assert_array_equal(classes == 255, nodata)


def test_integer_input_without_descriptions_uses_band_numbers(qgis_app, model_4b_l1c, make_raster, tmp_path):
    """An int16 raster without band names works when band numbers are given; without them the error lists the bands."""
    path = make_raster("int.tif", smooth_field(5, 90, 130, dtype=np.int16))
    out = run({"INPUT": str(path), "MODEL": str(model_4b_l1c), "BANDS": [1, 2, 3, 5],
               "OUTPUT_CLASSES": str(tmp_path / "c.tif")})
    assert gdal.Open(out["OUTPUT_CLASSES"]).ReadAsArray().max() < 255
    with pytest.raises(Exception, match=r"Not found: blue \(B02, B2, blue\).*1: \(no description\)"):
        run({"INPUT": str(path), "MODEL": str(model_4b_l1c), "OUTPUT_CLASSES": str(tmp_path / "d.tif")})
    assert not (tmp_path / "d.tif").exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"BANDS": [1, 2, 3, 7, 9, 11]}, r"Band number\(s\) 11 do not exist: the raster has 10 band\(s\)"),
        ({"BANDS": [1, 2, 3, 7]}, r"The model expects 6 bands \(blue, green, red, nir, swir16, swir22\) but 4"),
        ({"EXTENT": "0,1,0,1 [EPSG:32633]"}, r"does not overlap the raster"),
        ({"OUTPUT_CLASSES": "/nonexistent-folder/c.tif"}, r"the folder /nonexistent-folder does not exist"),
        ({"TILE_SIZE": 256, "OVERLAP": 256}, r"Overlap 256 px does not fit tiles of 256 px"),
        ({"MODEL": "/nonexistent/model.json"}, r"No model package at"),
    ],
)
def test_bad_input_is_explained(qgis_app, s2_30m, model_6b_l1c, tmp_path, params, message):
    """Each mistake gives a QgsProcessingException that names the problem and the fix, and writes nothing."""
    from qgis.core import QgsProcessingException

    base = {"INPUT": str(s2_30m), "MODEL": str(model_6b_l1c), "OUTPUT_CLASSES": str(tmp_path / "c.tif"),
            "OUTPUT_PROBABILITIES": str(tmp_path / "p.tif")}
    with pytest.raises(QgsProcessingException, match=message):
        run({**base, **params})
    assert leftovers(tmp_path) == []


def test_four_band_raster_for_six_band_model(qgis_app, model_6b_l1c, make_raster, tmp_path):
    """A 4-band raster given to the 6-band model is refused with the band counts."""
    from qgis.core import QgsProcessingException

    path = make_raster("four.tif", smooth_field(4, 64, 64), descriptions=("B02", "B03", "B04", "B08"))
    with pytest.raises(QgsProcessingException, match=r"expects 6 bands .* has only 4"):
        run({"INPUT": str(path), "MODEL": str(model_6b_l1c), "OUTPUT_CLASSES": str(tmp_path / "c.tif")})


def test_not_a_raster(qgis_app, model_6b_l1c, tmp_path):
    from qgis.core import QgsProcessingException

    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(QgsProcessingException, match=r"Cannot open .*notes.tif as a raster"):
        run({"INPUT": str(text), "MODEL": str(model_6b_l1c), "OUTPUT_CLASSES": str(tmp_path / "c.tif")})


def test_all_nodata_raster(qgis_app, model_4b_l1c, make_raster, tmp_path):
    from qgis.core import QgsProcessingException

    path = make_raster("empty.tif", np.zeros((4, 80, 80), np.uint16), nodata=0,
                       descriptions=("B02", "B03", "B04", "B08"))
    with pytest.raises(QgsProcessingException, match="no valid pixel"):
        run({"INPUT": str(path), "MODEL": str(model_4b_l1c), "OUTPUT_CLASSES": str(tmp_path / "c.tif")})
    assert not (tmp_path / "c.tif").exists()


@pytest.mark.parametrize("damage", ["corrupt", "missing", "truncated"])
def test_broken_weights(qgis_app, s2_30m, model_6b_l1c, tmp_path, damage):
    """Corrupt or missing weights are refused before anything runs; the message says what to do."""
    from qgis.core import QgsProcessingException

    package = tmp_path / "pkg"
    shutil.copytree(model_6b_l1c, package)
    weights = package / "weights.safetensors"
    if damage == "missing":
        weights.unlink()
    elif damage == "corrupt":
        with open(weights, "r+b") as f:
            f.seek(1000)
            f.write(b"\0" * 64)
    else:
        weights.write_bytes(weights.read_bytes()[:5000])
    expected = "is missing" if damage == "missing" else "does not match the checksum"
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(QgsProcessingException, match=expected):
        run({"INPUT": str(s2_30m), "MODEL": str(package), "OUTPUT_CLASSES": str(out / "c.tif")})
    assert leftovers(out) == []


def test_cancel_leaves_nothing(qgis_app, s2_10m, model_6b_l1c, tmp_path):
    """Cancelling in the middle of a run raises, and neither output nor temporary file is left behind."""
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda value: feedback.cancel() if value > 20 else None)
    with pytest.raises(QgsProcessingException, match="cancelled"):
        run({"INPUT": str(s2_10m), "MODEL": str(model_6b_l1c), "OUTPUT_CLASSES": str(tmp_path / "c.tif"),
             "OUTPUT_PROBABILITIES": str(tmp_path / "p.tif"), "BATCH_SIZE": 1}, feedback)
    assert leftovers(tmp_path) == []


def test_model_builder_model(qgis_app, s2_30m, model_6b_l1c, tmp_path):
    """The algorithm works as a step of a Model Builder model (.model3), with its outputs as model outputs."""
    import processing
    from qgis.core import QgsProcessingModelAlgorithm

    model = cloud_mask_model(model_6b_l1c)
    path = tmp_path / "cloud_mask.model3"
    assert model.toFile(str(path))
    loaded = QgsProcessingModelAlgorithm()
    assert loaded.fromFile(str(path))
    result = processing.run(loaded, {"scene": str(s2_30m), "classify:mask": str(tmp_path / "mask.tif")})
    assert gdal.Open(result["classify:mask"]).RasterXSize == 512


def test_tta_parameter_and_tile_size_warning(qgis_app, s2_30m, model_4b_l1c, tmp_path):
    """"Test-time augmentation" is an advanced boolean (off by default); a tile size other than the package's
    training tile runs and reports a non-fatal error (a warning) in the log."""
    from qgis.core import QgsApplication, QgsProcessingFeedback, QgsProcessingParameterDefinition

    alg = QgsApplication.processingRegistry().algorithmById(ALG)
    tta = alg.parameterDefinition("TTA")
    assert tta.type() == "boolean" and tta.defaultValue() is False and tta.description() == "Test-time augmentation"
    assert tta.flags() & QgsProcessingParameterDefinition.FlagAdvanced

    class Recorder(QgsProcessingFeedback):
        errors: list[tuple[str, bool]] = []

        def reportError(self, error, fatalError=False):  # noqa: N802, N803 (QGIS API)
            self.errors.append((error, fatalError))

        def pushWarning(self, warning):  # noqa: N802 (QGIS API; warnings are logged as warnings, issue 11)
            self.errors.append((warning, False))

    feedback = Recorder()
    out = run({"INPUT": str(s2_30m), "MODEL": str(model_4b_l1c), "OUTPUT_CLASSES": str(tmp_path / "c.tif"),
               "TILE_SIZE": 320, "OVERLAP": 64}, feedback)
    assert gdal.Open(out["OUTPUT_CLASSES"]).RasterXSize == 512
    assert [fatal for message, fatal in feedback.errors if "trained on" in message] == [False]
