"""How a raster is fed to a model (models/inputs.py), the same in every pipeline: band selection, tile size and
overlap, and the value-range check, which follows the engine's pixel-validity rule (dataset masks included)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from deepraster.models.encoders import EncoderInfo
from deepraster.models.errors import BandMappingError
from deepraster.models.feature_extraction import FeatureRequest, extract_features
from deepraster.models.feature_extraction import resolve_tiling as feature_tiling
from deepraster.models.inputs import check_value_range
from deepraster.models.package import load_package
from deepraster.models.pixel_classification import ClassifyRequest, classify_raster
from deepraster.models.pixel_classification import resolve_tiling as classify_tiling
from deepraster.tiling.errors import DeepRasterError
from deepraster.tiling.reader import InputTransform
from deepraster.tiling.source import RasterSource
from helpers import smooth_field
from osgeo import gdal


@pytest.mark.parametrize(("bands", "message"), [
    (None, r"The model 'ukis-csmask-6b-l1c' expects 6 bands \(.*\) but .*four.tif has only 4\."),
    ((1, 2, 3, 4), r"The model expects 6 bands \(.*\) but 4 band number\(s\) were given"),
    ((1, 2, 3, 4, 5, 9), r"Band number\(s\) 5, 9 do not exist: the raster has 4 band\(s\)"),
])
def test_band_mistakes_give_the_same_error_in_both_pipelines(make_raster, tmp_path: Path, model_6b_l1c: Path,
                                                             bands, message: str) -> None:
    """The 6-band package on a 4-band raster (too few bands, too few band numbers, band numbers that do not exist):
    classification and feature extraction raise the same BandMappingError with the same message, before any
    model is built or any output written."""
    path = make_raster("four.tif", smooth_field(4, 64, 64))
    package = load_package(model_6b_l1c)
    with pytest.raises(BandMappingError, match=message) as classify:
        classify_raster(ClassifyRequest(raster=str(path), package=package, classes_path=str(tmp_path / "c.tif"),
                                        bands=bands, device="cpu"))
    with pytest.raises(BandMappingError, match=message) as features:
        extract_features(FeatureRequest(raster=str(path), output=str(tmp_path / "f.tif"), package=package,
                                        bands=bands, device="cpu"))
    assert str(classify.value) == str(features.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["four.tif"]


def test_tile_rounding_and_overlap_alike_in_both_pipelines(tmp_path: Path, model_6b_l1c: Path) -> None:
    """A tile size off the model's multiple is rounded up with the same kind of message; an overlap that does not
    fit the tile is refused with the same message."""
    package = load_package(model_6b_l1c)
    enc = EncoderInfo("toy", "cnn", 16, 256, 6, 32, 256)
    notes: list[str] = []
    classify = ClassifyRequest(raster="x.tif", package=package, tile_size=100, overlap=10)
    features = FeatureRequest(raster="x.tif", output="f.tif", timm_model="toy", tile_size=100, overlap=16)
    assert classify_tiling(classify, notes.append) == (128, 10)
    assert feature_tiling(features, enc, notes.append) == (128, 16)
    assert notes == ["Tile size 100 px is not a multiple of the model's size divisor (32 px): using 128 px.",
                     "Tile size 100 px is not a multiple of the encoder's size multiple (32 px): using 128 px."]
    errors = []
    for run in (lambda: classify_tiling(dataclasses.replace(classify, tile_size=256, overlap=256), notes.append),
                lambda: feature_tiling(dataclasses.replace(features, tile_size=256, overlap=256), enc, notes.append)):
        with pytest.raises(DeepRasterError, match=r"Overlap 256 px does not fit tiles of 256 px") as error:
            run()
        errors.append(str(error.value))
    assert errors[0] == errors[1]


def test_value_range_check_ignores_pixels_outside_the_dataset_mask(make_raster, model_6b_l1c: Path) -> None:
    """Three quarters of the raster hold values far outside the model's range but lie outside the dataset mask:
    the check looks only at valid pixels (the engine's rule) and stays quiet; without the mask it warns."""
    data = np.full((1, 64, 64), 60000, np.uint16)  # 6.0 after the scale: far above the range 0–1
    data[:, :, 48:] = 1000  # 0.1: inside the range
    package = dataclasses.replace(load_package(model_6b_l1c), expected_range=(0.0, 1.0))
    transform = InputTransform(bands=(1,), scale=1e-4)
    unmasked = make_raster("unmasked.tif", data)
    masked = make_raster("masked.tif", data)
    ds = gdal.Open(str(masked), gdal.GA_Update)
    ds.CreateMaskBand(gdal.GMF_PER_DATASET)
    ds.GetRasterBand(1).GetMaskBand().WriteArray((data[0] == 1000).astype(np.uint8) * 255)
    ds = None
    for path, warned in ((unmasked, True), (masked, False)):
        source = RasterSource.open(str(path))
        notes: list[str] = []
        check_value_range(source, transform, package, notes.append)
        assert source.has_dataset_mask is not warned
        assert bool(notes) is warned and all("far outside the range 0–1" in n for n in notes)
