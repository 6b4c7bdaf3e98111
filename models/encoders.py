"""Pretrained encoders as feature extractors: a torch module ``(N, bands, T, T)`` → ``(N, D, T/s, T/s)``.

Three sources, all read from local files unless the user asks for a download:

* a **timm model name** with a weights file (read by :mod:`deepraster.models.weights`, as packages' weights are).
  Vision Transformers are built with ``dynamic_img_size=True``: their patch tokens are reshaped to the patch grid of
  any tile size after dropping the prefix tokens (class and register tokens: timm's ``num_prefix_tokens``), so the
  output stride is the patch size. CNNs give the feature map of the stage with the chosen output stride (8, 16 or
  32, from timm's ``feature_info``); later stages are pruned, so they cost nothing;
* a **model package** whose task is ``feature_extraction`` (framework ``timm``);
* the **encoder of a segmentation package** (segmentation-models-pytorch), e.g. the ukis-csmask EfficientNet-B4: a
  real pretrained multispectral backbone; its stage of the chosen stride is used and deeper stages are skipped.

Weights for another band count than the raster's are adapted for 3-band (RGB) checkpoints with timm's
``adapt_input_conv`` (kernels repeated over the bands and scaled by 3/bands); other mismatches are refused with the
keys that differ. Which of these a name or path means is decided by :mod:`deepraster.models.encoder_registry`.
Nothing here imports QGIS.
"""

from __future__ import annotations

import difflib
import math
import socket
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..tiling.errors import DependencyError
from .errors import EncoderError
from .loaders import key_differences, load_model, load_network
from .package import verify_weights
from .spec import ModelPackage
from .weights import read_state_dict

Info = Callable[[str], None]

HUB_HOST = ("huggingface.co", 443)
CNN_STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class EncoderInfo:
    """What the pipeline needs to know about an encoder.

    Sizes in input pixels. ``mean``/``std`` are the normalisation the weights expect, per input channel, in model
    units (after the value scale); empty when the source states none.
    """

    name: str
    kind: str  # "vit" or "cnn"
    stride: int
    channels: int
    in_channels: int
    size_multiple: int
    default_tile: int
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    source: str = ""
    fixed_tile: int = 0  # a ViT that cannot change its input size takes only tiles of this size


# --------------------------------------------------------------------------------------------------- modules


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - the algorithm checks its packages before running
        raise DependencyError("PyTorch is not installed in QGIS's Python: install torch.") from exc
    return torch


def _modules():
    """The wrapper modules, defined on first use so that importing this file needs no torch."""
    torch = _torch()

    class VitPatchTokens(torch.nn.Module):
        """A timm ViT's last-layer patch tokens (after its final norm) as a ``(N, D, H/p, W/p)`` map."""

        def __init__(self, model: torch.nn.Module, patch: int) -> None:
            super().__init__()
            self.model = model
            self.patch = patch
            self.prefix = int(getattr(model, "num_prefix_tokens", 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, _, h, w = x.shape
            gh, gw = h // self.patch, w // self.patch
            tokens = self.model.forward_features(x)
            if tokens.ndim != 3 or tokens.shape[1] != self.prefix + gh * gw:
                raise EncoderError(f"The ViT returned tokens of shape {tuple(tokens.shape)} for {h}×{w} px input; "
                                   f"expected {self.prefix} prefix + {gh}×{gw} patch tokens.")
            return tokens[:, self.prefix:].transpose(1, 2).reshape(n, tokens.shape[2], gh, gw)

    class TimmStage(torch.nn.Module):
        """One stage of a timm CNN (``forward_intermediates``), later stages pruned."""

        def __init__(self, model: torch.nn.Module, index: int) -> None:
            super().__init__()
            self.model = model
            self.index = index

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model.forward_intermediates(x, indices=[self.index], intermediates_only=True)[0]

    class SmpStage(torch.nn.Module):
        """The stage of depth ``depth`` (stride 2**depth) of a segmentation-models-pytorch encoder."""

        def __init__(self, encoder: torch.nn.Module, depth: int) -> None:
            super().__init__()
            encoder._depth = depth  # smp encoders stop after this many stages
            self.encoder = encoder
            self.depth = depth

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.encoder(x)[self.depth]

    return VitPatchTokens, TimmStage, SmpStage


def _names(value: Any) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


def fit_encoder_weights(model, state: Mapping[str, Any], name: str, in_channels: int, info: Info) -> dict[str, Any]:
    """A checkpoint fitted to a timm model: timm's own checkpoint filter, first-conv adaptation of RGB weights to
    ``in_channels``, classifier keys dropped; raises :class:`EncoderError` naming the keys that differ.

    ``model`` may be a meta-device model (:func:`deepraster.models.loaders.build_empty`): where timm's filter fails
    on it, the error is raised (the caller builds a real model and fits again) rather than the keys used as given.
    """
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except (KeyError, RuntimeError, ValueError, AttributeError, IndexError, NotImplementedError) as exc:
            if any(p.is_meta for p in model.parameters()):
                raise
            info(f"timm's checkpoint conversion for {name} did not apply ({type(exc).__name__}): keys used as given.")
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    own = model.state_dict()
    for conv in _names(cfg.get("first_conv")):
        key = f"{conv}.weight"
        if key in state and key in own and state[key].ndim == 4 and state[key].shape[1] != own[key].shape[1]:
            have = state[key].shape[1]
            if have != 3 and in_channels != 1:
                raise EncoderError(
                    f"The weights are for {have} input bands ({key} has shape {tuple(state[key].shape)}) but "
                    f"{in_channels} band(s) were selected. Select {have} bands, or use weights for RGB (3 bands), "
                    "which are adapted to any band count."
                )
            from timm.models import adapt_input_conv

            state = dict(state)
            state[key] = adapt_input_conv(in_channels, state[key])
            info(f"Adapted the {have}-band weights of {key} to {in_channels} bands (timm adapt_input_conv: the "
                 f"RGB kernels repeated over the bands and scaled by 3/{in_channels}).")
    heads = tuple(f"{c}." for c in _names(cfg.get("classifier")))
    state = {k: v for k, v in state.items() if k in own or not (heads and k.startswith(heads))}
    details = key_differences(own, state)
    if details is not None:
        raise EncoderError(
            f"The weights do not fit timm model {name!r} with {in_channels} input band(s) ({details}). Choose the "
            "timm model these weights were trained with."
        )
    return state


def load_encoder_weights(model, state: dict[str, Any], name: str, in_channels: int, info: Info) -> None:
    """Load a checkpoint into a timm model after :func:`fit_encoder_weights`."""
    model.load_state_dict(fit_encoder_weights(model, state, name, in_channels, info), strict=True)


# --------------------------------------------------------------------------------------------------- builders


def check_network(host: tuple[str, int] = HUB_HOST, timeout: float = 5.0) -> None:
    """Raise a clear :class:`EncoderError` at once when the model hub cannot be reached (instead of hanging)."""
    try:
        socket.create_connection(host, timeout=timeout).close()
    except OSError as exc:
        raise EncoderError(
            f"Downloading weights needs a connection to {host[0]}, which cannot be reached from this computer "
            f"({exc}). Download the weights file on a connected computer (see the presets in the help) and give it "
            "as the weights file, with the download option off."
        ) from exc


def _timm():
    try:
        import timm
    except ImportError as exc:
        raise DependencyError("The Python package timm is not installed in QGIS's Python: pip install timm.") from exc
    return timm


def check_timm_name(name: str) -> None:
    """Raise :class:`EncoderError` with close names when timm has no such model."""
    timm = _timm()
    base = name.split(".")[0]
    if not name or not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Close names: {', '.join(close)}." if close else " See timm.list_models() for the names."
        raise EncoderError(f"timm has no model named {name!r}.{hint}")


def timm_encoder(name: str, in_channels: int, weights: str | Path | None, stride: int | None = None,
                 hub: bool = False, kwargs: Mapping[str, Any] | None = None, info: Info = lambda m: None):
    """A timm model as a feature extractor, with its :class:`EncoderInfo`.

    Args:
        name: timm model name, optionally with a pretrained tag (``vit_small_patch14_dinov2.lvd142m``).
        in_channels: input bands.
        weights: local weights file; required unless ``hub``.
        stride: CNN stage by output stride (8, 16, 32; default 16); ViTs always give their patch size.
        hub: download the pretrained weights (needs a network; refused quickly without one).
        kwargs: extra arguments for ``timm.create_model``.
    """
    torch = _torch()
    timm = _timm()
    check_timm_name(name)
    if weights is None and not hub:
        raise EncoderError(f"timm model {name!r} needs its weights: give a weights file (safetensors or state dict) "
                           "or allow the download from the model hub. Random weights give meaningless features.")
    if hub and weights is None:
        check_network()
    create = {"pretrained": bool(hub and weights is None), "in_chans": in_channels, "num_classes": 0,
              **dict(kwargs or {})}

    def build():
        try:
            try:
                return timm.create_model(name, dynamic_img_size=True, **create)
            except TypeError:  # not a ViT: CNN constructors take no dynamic_img_size
                return timm.create_model(name, **create)
        except (RuntimeError, OSError, ValueError) as exc:
            raise EncoderError(f"timm could not build {name!r}: {type(exc).__name__}: {str(exc)[:300]}") from exc

    if weights is None:
        model = build()  # the hub's pretrained weights
    else:
        messages: list[str] = []

        def fit(model, state):
            messages.clear()  # only the messages of the fit whose result is used
            return fit_encoder_weights(model, state, name, in_channels, messages.append)

        model = load_network(build, read_state_dict(weights), fit)  # no random initialisation to overwrite
        for message in messages:
            info(message)
    model.eval()
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    mean, std = _cycle(cfg.get("mean"), in_channels), _cycle(cfg.get("std"), in_channels)
    vit_tokens, timm_stage, _ = _modules()
    if hasattr(model, "patch_embed") and hasattr(model, "num_prefix_tokens"):
        size_of_patch = model.patch_embed.patch_size
        patch = int(size_of_patch if isinstance(size_of_patch, int) else size_of_patch[0])
        if stride not in (None, patch):
            info(f"{name} is a Vision Transformer: its output stride is its patch size, {patch} px "
                 f"(the stride {stride} applies to CNNs only).")
        size = int((cfg.get("input_size") or (3, 224, 224))[-1])
        default_tile = size if size <= 256 and size % patch == 0 else 16 * patch
        fixed = 0 if getattr(model, "dynamic_img_size", False) else size
        module = vit_tokens(model, patch)
        return module.eval(), EncoderInfo(name, "vit", patch, int(model.embed_dim), in_channels, patch,
                                          fixed or default_tile, mean, std, f"timm {name}", fixed)
    if not hasattr(model, "forward_intermediates") or not hasattr(model, "feature_info"):
        raise EncoderError(f"timm model {name!r} is neither a Vision Transformer nor a CNN with feature maps "
                           "(forward_intermediates); choose another model.")
    reductions = [int(f["reduction"]) for f in model.feature_info]
    wanted = stride or 16
    if wanted not in reductions:
        raise EncoderError(f"{name} has no stage with output stride {wanted}; its stages have strides "
                           f"{sorted(set(reductions))}.")
    index = len(reductions) - 1 - reductions[::-1].index(wanted)  # the deepest stage at that stride
    channels = int(model.feature_info[index]["num_chs"])
    model.prune_intermediate_layers([index], prune_head=True)
    module = timm_stage(model, index).eval()
    with torch.inference_mode():
        probe = module(torch.zeros(1, in_channels, 2 * wanted, 2 * wanted))
    if tuple(probe.shape[1:]) != (channels, 2, 2):
        raise EncoderError(f"{name} stage {index} gives {tuple(probe.shape[1:])} for a {2 * wanted}-px input; "
                           f"expected ({channels}, 2, 2).")
    return module, EncoderInfo(name, "cnn", wanted, channels, in_channels, wanted, 256, mean, std, f"timm {name}")


def _cycle(values: Sequence[float] | None, n: int) -> tuple[float, ...]:
    """RGB statistics spread over ``n`` bands the way ``adapt_input_conv`` spreads RGB kernels (R, G, B, R, ...)."""
    if not values:
        return ()
    values = list(values)
    if n == 1 and len(values) == 3:
        return (float(sum(values) / 3),)
    return tuple(float(values[i % len(values)]) for i in range(n))


def package_encoder(package: ModelPackage, stride: int | None = None, info: Info = lambda m: None):
    """The encoder of a model package: a feature-extraction package (timm) or a segmentation package (smp)."""
    arch = package.architecture
    package_stride = int(getattr(package, "output_stride", 1) or 1)
    if package.task == "feature_extraction" and arch.framework == "timm":
        verify_weights(package)
        module, enc = timm_encoder(arch.arch, arch.in_channels, package.weights_file,
                                   stride or (package_stride if package_stride > 1 else None),
                                   kwargs=getattr(arch, "kwargs", None), info=info)
        return module, EncoderInfo(package.name or enc.name, enc.kind, enc.stride, enc.channels, enc.in_channels,
                                   enc.size_multiple, package.tile_size, (), (), f"package {package.name}")
    if arch.framework != "smp":
        raise EncoderError(f"The package {package.name!r} ({package.task}, framework {arch.framework!r}) has no "
                           "encoder this tool can use: give a feature-extraction package (timm) or a segmentation "
                           "package (segmentation-models-pytorch).")
    encoder = getattr(load_model(package), "encoder", None)
    if encoder is None or not hasattr(encoder, "_depth"):
        raise EncoderError(f"The network of package {package.name!r} has no segmentation-models-pytorch encoder.")
    wanted = stride or 16
    depth = int(round(math.log2(wanted))) if wanted > 0 else 0
    max_depth = int(encoder._depth)
    if 2 ** depth != wanted or not 1 <= depth <= max_depth:
        raise EncoderError(f"The encoder of {package.name!r} has stages with output strides "
                           f"{[2 ** d for d in range(1, max_depth + 1)]}; {wanted} is not one of them.")
    channels = int(encoder.out_channels[depth])
    *_, smp_stage = _modules()
    module = smp_stage(encoder, depth).eval()
    multiple = math.lcm(wanted, max(int(package.size_divisor), 1))
    return module, EncoderInfo(f"{package.name} encoder ({arch.encoder})", "cnn", wanted, channels, arch.in_channels,
                               multiple, package.tile_size, (), (), f"package {package.name}")


def quantize_int8(module, info: Info = lambda m: None):
    """Dynamic int8 quantisation of the Linear layers (CPU): the bulk of a ViT's compute.

    CNN convolutions cannot be quantised dynamically (they need calibration): a model without Linear layers is
    returned unchanged, and the log says so.
    """
    torch = _torch()
    linear = sum(isinstance(m, torch.nn.Linear) for m in module.modules())
    if linear == 0:
        info("int8: this encoder has no Linear layers (a CNN: convolutions cannot be quantised dynamically); "
             "running in float32.")
        return module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notice (still the CPU int8 path)
        quantized = torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)
    info(f"int8: {linear} Linear layers quantised dynamically (weights int8, activations quantised per batch).")
    return quantized
