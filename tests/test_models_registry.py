"""The encoder registry (models/encoder_registry.py): presets, timm names and packages behind one get_encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from deepraster.models.encoder_registry import PRESETS, get_encoder, list_encoders, resolve_encoder
from deepraster.models.errors import EncoderError, ModelPackageError
from deepraster.models.feature_extraction import FeatureRequest, resolve_encoder_request
from deepraster.models.spec import ModelPackage
from safetensors.torch import save_file


def test_presets_and_names_resolve() -> None:
    """Each preset is found by its label and by its timm name; other text is a timm name, left as it is."""
    assert list_encoders() == PRESETS and len({p.label for p in PRESETS}) == len(PRESETS)
    for preset in PRESETS:
        assert resolve_encoder(preset.label) == preset.timm_name
        assert resolve_encoder(preset.timm_name) == preset.timm_name
    assert resolve_encoder(" convnext_tiny ") == "convnext_tiny"
    assert resolve_encoder("hf_hub:timm/resnet18.a1_in1k") == "hf_hub:timm/resnet18.a1_in1k"


def test_package_paths_resolve_to_packages(model_6b_l1c: Path, tmp_path: Path) -> None:
    """A package folder, its model.json or a Path give the package; a package-like name that does not exist says
    so; a FeatureRequest naming a package or a preset as its timm model is resolved before the run."""
    for given in (str(model_6b_l1c), str(model_6b_l1c / "model.json"), model_6b_l1c):
        package = resolve_encoder(given)
        assert isinstance(package, ModelPackage) and package.name == "ukis-csmask-6b-l1c"
    assert resolve_encoder(package) is package
    with pytest.raises(ModelPackageError, match="No model package at"):
        resolve_encoder(str(tmp_path / "missing.json"))
    request = resolve_encoder_request(FeatureRequest(raster="r.tif", output="o.tif", timm_model=str(model_6b_l1c)))
    assert request.package is not None and request.package.name == package.name and request.timm_model is None
    preset = PRESETS[0]
    assert resolve_encoder_request(FeatureRequest(raster="r.tif", output="o.tif", timm_model=preset.label)) \
        .timm_model == preset.timm_name


def test_get_encoder_builds_a_timm_encoder(tmp_path: Path) -> None:
    """A timm name with a local weights file gives the CNN stage of the stride asked for; an unknown name fails
    with close names."""
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}, str(weights))
    module, enc = get_encoder("resnet18", 3, weights, stride=16)
    assert (enc.kind, enc.stride, enc.channels, enc.in_channels) == ("cnn", 16, 256, 3)
    with torch.inference_mode():
        assert module(torch.zeros(1, 3, 64, 64)).shape == (1, 256, 4, 4)
    with pytest.raises(EncoderError, match="Close names: resnet18"):
        get_encoder("resnet18x", 3, weights)
