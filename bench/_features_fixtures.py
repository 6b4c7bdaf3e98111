"""What the feature-extraction benchmark's children share: the real scene and package, the work folder, encoder
weights made once (random: speed does not depend on them), the whole-scene reference features, cosine agreement
and pipeline requests."""

from __future__ import annotations

from pathlib import Path

import _common

SCENE = _common.ROOT / ".data" / "s2" / "s2_l1c_10m.tif"
PACKAGE = _common.ROOT / ".data" / "models" / "ukis-csmask-6b-l1c"
WORK = _common.DATA / "features"




def setup() -> None:
    _common.ensure_plugin_path()
    WORK.mkdir(parents=True, exist_ok=True)


def random_timm_weights(name: str, file_name: str) -> Path:
    """A randomly initialised 4-band timm model ``name`` saved once as safetensors (speed and plumbing do not
    depend on the weights)."""
    import timm
    import torch
    from safetensors.torch import save_file

    path = WORK / file_name
    if not path.exists():
        torch.manual_seed(0)
        model = timm.create_model(name, in_chans=4)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def vit_weights() -> Path:
    """ViT-S/16, 4 bands, random weights."""
    return random_timm_weights("vit_small_patch16_224", "vit_s16_4b.safetensors")


def resnet_weights() -> Path:
    """ResNet-18, 4 bands, random weights."""
    return random_timm_weights("resnet18", "resnet18_4b.safetensors")


def reference(stride: int):
    """The encoder on the whole scene at once (single tile), cached as .npy per stride."""
    import numpy as np

    path = WORK / f"whole_scene_stride{stride}.npy"
    if path.exists():
        return np.load(path)
    import torch
    from deepraster.models.encoders import package_encoder
    from deepraster.models.package import load_package
    from osgeo import gdal

    package = load_package(PACKAGE)
    raw = gdal.Open(str(SCENE)).ReadAsArray()[[0, 1, 2, 6, 8, 9]].astype(np.float32) * 1e-4
    mean = np.array(package.normalization.a, np.float32)[:, None, None]
    std = np.array(package.normalization.b, np.float32)[:, None, None]
    module, _ = package_encoder(package, 32)
    with torch.inference_mode():
        stages = module.encoder(torch.from_numpy(((raw - mean) / std)[None]))
    for s in (8, 16, 32):
        np.save(WORK / f"whole_scene_stride{s}.npy", stages[int(np.log2(s))][0].numpy())
    return np.load(path)


def cosine(a, b) -> dict[str, float]:
    import numpy as np

    a = a / np.maximum(np.linalg.norm(a, axis=0, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=0, keepdims=True), 1e-12)
    c = (a * b).sum(axis=0)
    return {"mean": round(float(c.mean()), 4), "p5": round(float(np.percentile(c, 5)), 4),
            "min": round(float(c.min()), 4)}


def request(**kwargs):
    from deepraster.models.feature_extraction import FeatureRequest

    return FeatureRequest(raster=str(SCENE), device="cpu", **kwargs)


def package_request(output: Path, stride: int, **kwargs):
    from deepraster.models.package import load_package

    return request(output=str(output), package=load_package(PACKAGE), stride=stride, **kwargs)


def vit_request(output: Path, **kwargs):
    return request(output=str(output), timm_model="vit_small_patch16_224", weights=str(vit_weights()),
                    bands=(1, 2, 3, 7), value_scale=1e-4, **kwargs)
