"""One registry of the encoders feature extraction can use, behind :func:`get_encoder`:

* **presets**: well-known encoders, by their label (what the tool's list shows) or their timm name;
* **timm model names** (``resnet50``, ``vit_small_patch14_dinov2.lvd142m``), with a weights file or a download;
* **model packages**: a :class:`~deepraster.models.spec.ModelPackage`, or the path of one (folder, ``model.json``,
  ``.drpk``, Esri ``.emd`` / ``.dlpk``): a feature-extraction package, or the encoder of a segmentation package.

:func:`list_encoders` lists the presets. Building is :mod:`deepraster.models.encoders`; nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .encoders import EncoderInfo, Info, package_encoder, timm_encoder
from .sources import is_model_path, open_model
from .spec import ModelPackage


@dataclass(frozen=True)
class Preset:
    """A well-known encoder: its timm name and where its weights come from."""

    label: str
    timm_name: str
    note: str


PRESETS: tuple[Preset, ...] = (
    Preset("DINOv2 ViT-S/14 (384 features)", "vit_small_patch14_dinov2.lvd142m",
           "Meta DINOv2 self-supervised ViT-S/14; weights: timm/vit_small_patch14_dinov2.lvd142m on Hugging Face."),
    Preset("DINOv2 ViT-B/14 (768 features)", "vit_base_patch14_dinov2.lvd142m",
           "Meta DINOv2 ViT-B/14; weights: timm/vit_base_patch14_dinov2.lvd142m."),
    Preset("DINOv2 ViT-S/14 reg4 (384 features)", "vit_small_patch14_reg4_dinov2.lvd142m",
           "DINOv2 with register tokens (dropped with the class token); weights: "
           "timm/vit_small_patch14_reg4_dinov2.lvd142m."),
    Preset("DINO ViT-S/16 (384 features)", "vit_small_patch16_224.dino",
           "Facebook DINO ViT-S/16; weights: timm/vit_small_patch16_224.dino, or dino_deitsmall16_pretrain.pth."),
    Preset("DINO ViT-B/16 (768 features)", "vit_base_patch16_224.dino",
           "Facebook DINO ViT-B/16; weights: timm/vit_base_patch16_224.dino, or dino_vitbase16_pretrain.pth."),
    Preset("ResNet-50 ImageNet (1024 features)", "resnet50.a1_in1k",
           "timm ResNet-50 trained on ImageNet-1k; weights: timm/resnet50.a1_in1k."),
    Preset("SSL4EO-S12 ResNet-50 (S2, 13 bands)", "resnet50",
           "Self-supervised on Sentinel-2 L1C (13 bands, B01…B12 with B8A); weights: torchgeo "
           "ResNet50_Weights.SENTINEL2_ALL_MOCO (a timm resnet50 state dict with in_chans=13); give the 13 bands in "
           "that order, value scale 0.0001 and normalisation 'none'."),
)


def list_encoders() -> tuple[Preset, ...]:
    """The presets, in the order the tool lists them (any other timm model name or model package works as well)."""
    return PRESETS


def resolve_encoder(name_or_path: str | Path | ModelPackage) -> ModelPackage | str:
    """What a name stands for: a package (a package object, or the path of one), or a timm model name (a preset's
    label or timm name gives the preset's timm name; any other text is taken as a timm name)."""
    if isinstance(name_or_path, ModelPackage):
        return name_or_path
    if isinstance(name_or_path, Path) or is_model_path(name_or_path):
        return open_model(name_or_path)
    text = str(name_or_path).strip()
    preset = next((p for p in PRESETS if text in (p.label, p.timm_name)), None)
    return preset.timm_name if preset is not None else text


def get_encoder(name_or_path: str | Path | ModelPackage, in_channels: int, weights: str | Path | None = None,
                stride: int | None = None, hub: bool = False, kwargs: Mapping[str, Any] | None = None,
                info: Info = lambda m: None) -> tuple[Any, EncoderInfo]:
    """The encoder ``name_or_path`` names (see :func:`resolve_encoder`) as a torch module, with its
    :class:`~deepraster.models.encoders.EncoderInfo`.

    Args:
        name_or_path: a preset, a timm model name, a package or a package's path.
        in_channels: input bands (timm models; a package states its own).
        weights: local weights file of a timm model; required unless ``hub``.
        stride: output stride in input pixels: the CNN stage (8, 16, 32; default 16); a ViT's is its patch size.
        hub: download a timm model's pretrained weights (needs a network).
        kwargs: extra arguments for ``timm.create_model``.
        info: receives messages for the user's log.
    """
    source = resolve_encoder(name_or_path)
    if isinstance(source, ModelPackage):
        return package_encoder(source, stride, info)
    return timm_encoder(source, in_channels, weights, stride, hub, kwargs, info)
