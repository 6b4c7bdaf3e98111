""""Extract deep features" in real QGIS: registration, declared output, processing.run with a timm preset and with
a segmentation package's encoder on the real 30 m scene, default rendering, and errors as Processing messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from helpers import smooth_field
from osgeo import gdal
from safetensors.torch import save_file

ALG = "deepraster:extract_features"


def run(params: dict) -> dict:
    import processing
    from qgis.core import QgsProcessingFeedback

    return processing.run(ALG, params, feedback=QgsProcessingFeedback())


def test_algorithm_is_registered_with_declared_output(qgis_app) -> None:
    from qgis.core import QgsApplication, QgsProcessingParameterDefinition

    alg = QgsApplication.processingRegistry().algorithmById(ALG)
    assert alg is not None and alg.displayName() == "Extract deep features"
    assert alg.group() == "Feature extraction"
    assert {o.name(): o.type() for o in alg.outputDefinitions()} == {"OUTPUT": "outputRaster"}
    advanced = {p.name() for p in alg.parameterDefinitions()
                if p.flags() & QgsProcessingParameterDefinition.FlagAdvanced}
    assert {"TILE_SIZE", "OVERLAP", "BATCH_SIZE", "DEVICE", "HALF", "INT8", "PAUSE", "RESUME", "DOWNLOAD"} <= advanced
    help_text = alg.shortHelpString()
    for name in ("vit_small_patch14_dinov2.lvd142m", "vit_small_patch16_224.dino", "resnet50.a1_in1k"):
        assert name in help_text
    assert "weights file is still needed" in help_text


def test_preset_with_local_weights(qgis_app, make_raster, tmp_path: Path) -> None:
    """The DINO ViT-S/16 preset with a local weights file (random here) on a 5-band raster: 384 bands, 16×."""
    from deepraster.algorithms.extract_features import ExtractFeaturesAlgorithm

    torch.manual_seed(0)
    weights = tmp_path / "dino_vits16.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("vit_small_patch16_224").state_dict().items()},
              str(weights))
    preset = 2 + [s.split(": ", 1)[-1] for s in ExtractFeaturesAlgorithm.SOURCES[2:]].index(
        "DINO ViT-S/16 (384 features)")
    raster = make_raster("in.tif", smooth_field(5, 200, 240, seed=1))
    out = run({"INPUT": str(raster), "ENCODER": preset, "WEIGHTS": str(weights), "VALUE_SCALE": 1e-4,
               "OUTPUT": str(tmp_path / "features.tif")})
    ds = gdal.Open(out["OUTPUT"])
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (15, 13, 384)
    assert ds.GetGeoTransform()[1] == 160.0
    assert np.isfinite(ds.ReadAsArray()).all()
    assert ds.GetMetadataItem("DEEPRASTER_ENCODER") == "vit_small_patch16_224.dino"


def test_segmentation_package_encoder_on_real_scene_and_rendering(qgis_app, s2_30m: Path, model_6b_l1c: Path,
                                                                  tmp_path: Path) -> None:
    """The ukis-csmask encoder at stride 16 on the 30 m scene: 32 × 16 px of 480 m, float16 storage; loaded in
    QGIS it renders as RGB of the three most variable features stretched to mean ± 2σ."""
    from deepraster.algorithms.extract_features import FeatureStyle
    from qgis.core import QgsMultiBandColorRenderer, QgsRasterLayer

    out = run({"INPUT": str(s2_30m), "ENCODER": 0, "MODEL": str(model_6b_l1c), "STRIDE": 2, "OUTPUT_TYPE": 1,
               "OUTPUT": str(tmp_path / "features.tif")})
    ds, src = gdal.Open(out["OUTPUT"]), gdal.Open(str(s2_30m))
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (32, 16, 160)
    sgt = src.GetGeoTransform()
    assert ds.GetGeoTransform() == (sgt[0], 480.0, 0.0, sgt[3], 0.0, -480.0)
    assert ds.GetSpatialRef().IsSame(src.GetSpatialRef())
    values = ds.ReadAsArray()
    np.testing.assert_array_equal(values, values.astype(np.float16).astype(np.float32))
    layer = QgsRasterLayer(out["OUTPUT"], "features")
    assert layer.isValid()
    FeatureStyle().postProcessLayer(layer, None, None)
    renderer = layer.renderer()
    assert isinstance(renderer, QgsMultiBandColorRenderer)
    stds = values.reshape(160, -1).std(axis=1)
    assert sorted({renderer.redBand(), renderer.greenBand(), renderer.blueBand()}) == sorted(
        (np.argsort(-stds)[:3] + 1).tolist())
    red = renderer.redContrastEnhancement()
    band = values[renderer.redBand() - 1]
    assert red.minimumValue() == pytest.approx(band.mean() - 2 * band.std(), rel=1e-3, abs=1e-3)

    from deepraster.models.archive import write_archive  # the same package as one .drpk file: the same features

    archive = write_archive(model_6b_l1c, tmp_path / "csmask.drpk")
    again = run({"INPUT": str(s2_30m), "ENCODER": 0, "MODEL": str(archive), "STRIDE": 2, "OUTPUT_TYPE": 1,
                 "OUTPUT": str(tmp_path / "features_drpk.tif")})
    np.testing.assert_array_equal(gdal.Open(again["OUTPUT"]).ReadAsArray(), values)


def test_errors_are_processing_messages(qgis_app, make_raster, tmp_path: Path) -> None:
    from qgis.core import QgsProcessingException

    raster = make_raster("in.tif", smooth_field(3, 32, 32))
    with pytest.raises(QgsProcessingException, match="no package was given"):
        run({"INPUT": str(raster), "ENCODER": 0, "OUTPUT": str(tmp_path / "a.tif")})
    with pytest.raises(QgsProcessingException, match="Close names: resnet18"):
        run({"INPUT": str(raster), "ENCODER": 1, "TIMM_MODEL": "resnet_18", "WEIGHTS": str(raster),
             "OUTPUT": str(tmp_path / "b.tif")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]
