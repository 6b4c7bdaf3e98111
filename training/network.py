"""The network, its starting weights, the loss and the learning-rate schedule of a training run.

The network is a segmentation-models-pytorch architecture built by :func:`models.loaders.build_network` (never with
downloaded weights). Fine-tuning starts from the encoder of an existing model package: its bands must be the chips'
bands (matched by name or alias, :mod:`models.bands`), and its value scale and normalisation are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..models.bands import match_bands_by_name
from ..models.errors import BandMappingError, ModelPackageError
from ..models.sources import open_model
from ..models.spec import Architecture, ModelPackage
from ..models.weights import read_state_dict
from .dataset import IGNORE_INDEX
from .errors import TrainingDataError

ARCHITECTURES = ("Unet", "UnetPlusPlus", "FPN", "DeepLabV3Plus", "Linknet", "MAnet", "PSPNet", "PAN")
LOSSES = ("ce", "ce+dice", "dice", "focal")
SCHEDULES = ("cosine", "onecycle", "constant")


@dataclass(frozen=True)
class StartingPoint:
    """An existing package whose encoder starts the training, and the chip bands (0-based) in its band order."""

    package: ModelPackage
    bands: tuple[int, ...]


def starting_point(path: str, chip_bands: Sequence[str]) -> StartingPoint:
    """Open the package at ``path`` and match its bands with the chips' band descriptions (refused when they
    differ: the encoder learnt those bands)."""
    package = open_model(path)
    a = package.architecture
    if a.framework != "smp" or package.weights_format not in ("safetensors", "state_dict"):
        raise ModelPackageError(f"The package {package.name} is not a segmentation-models-pytorch network with a state "
                                "dict, so its encoder cannot start a training. Choose another package, or none.")
    names = ", ".join(package.band_names)
    if not chip_bands or not all(chip_bands):
        raise BandMappingError(f"The chips carry no band names, so they cannot be matched with the bands of "
                               f"{package.name} ({names}). Export the chips from a raster with band descriptions.")
    missing = [f"{b.name} ({', '.join(b.aliases)})" if b.aliases else b.name for b in package.bands
               if not any(b.matches(d) for d in chip_bands)]
    if missing or len(chip_bands) != len(package.bands):
        found = f" Not found: {'; '.join(missing)}." if missing else ""
        raise BandMappingError(
            f"The chips' bands ({', '.join(chip_bands)}) do not match the bands of {package.name}, whose encoder was "
            f"trained on {len(package.bands)} bands ({names}).{found} Export the chips with exactly these bands "
            "(band descriptions such as B02, B03 …), or train without initial weights.")
    bands = match_bands_by_name(package.bands, chip_bands)
    return StartingPoint(package, tuple(b - 1 for b in bands))


def architecture(arch: str, encoder: str, in_channels: int, classes: int) -> Architecture:
    """The smp architecture of the network to train."""
    if arch not in ARCHITECTURES:
        raise TrainingDataError(f"Unknown architecture {arch!r}: choose one of {', '.join(ARCHITECTURES)}.")
    return Architecture("smp", arch, encoder, in_channels, classes)


def build(arch: Architecture, start: StartingPoint | None):
    """The network with random weights, its encoder copied from ``start`` when given."""
    from ..models.loaders import build_network

    try:
        net = build_network(arch)
    except ModelPackageError as exc:
        raise TrainingDataError(f"segmentation-models-pytorch cannot build {arch.arch} with encoder {arch.encoder!r}: "
                                f"{exc.__cause__ or exc}. Choose another encoder (e.g. resnet18, resnet34, "
                                "efficientnet-b0, mobilenet_v2).") from exc
    if start is None:
        return net
    state = read_state_dict(start.package.weights_file, start.package.weights_format)
    own = net.state_dict()
    encoder = {k: v.to(own[k].dtype) for k, v in state.items()
               if k.startswith("encoder.") and k in own and tuple(v.shape) == tuple(own[k].shape)}
    wanted = [k for k in own if k.startswith("encoder.") and not k.endswith("num_batches_tracked")]
    missing = [k for k in wanted if k not in encoder]
    if missing:
        raise ModelPackageError(f"The encoder of {start.package.name} ({start.package.architecture.encoder}) does not "
                                f"fit a {arch.encoder} encoder ({len(missing)} tensors missing, e.g. {missing[0]}).")
    net.load_state_dict(encoder, strict=False)
    return net


def class_weights(counts: Sequence[int]) -> list[float]:
    """Inverse-frequency weights (mean 1) from the training pixel counts per class."""
    total = float(sum(counts))
    raw = [total / (len(counts) * max(n, 1)) for n in counts]
    mean = sum(raw) / len(raw)
    return [w / mean for w in raw]


def make_loss(name: str, weights: Sequence[float] | None):
    """A loss of (logits (B, C, H, W), labels (B, H, W) int64) that skips :data:`IGNORE_INDEX` pixels."""
    import torch
    from segmentation_models_pytorch import losses

    if name not in LOSSES:
        raise TrainingDataError(f"Unknown loss {name!r}: choose one of {', '.join(LOSSES)}.")
    weight = torch.tensor(weights, dtype=torch.float32) if weights else None
    ce = torch.nn.CrossEntropyLoss(weight=weight, ignore_index=IGNORE_INDEX)
    dice = losses.DiceLoss("multiclass", ignore_index=IGNORE_INDEX)
    focal = losses.FocalLoss("multiclass", ignore_index=IGNORE_INDEX)

    class Loss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ce = ce

        def forward(self, logits, target):
            if name == "ce":
                return self.ce(logits, target)
            if name == "ce+dice":
                return self.ce(logits, target) + dice(logits, target)
            return dice(logits, target) if name == "dice" else focal(logits, target)

    return Loss()


def make_schedule(name: str, optimizer, lr: float, steps: int):
    """A per-batch learning-rate schedule over ``steps`` batches."""
    import torch

    if name not in SCHEDULES:
        raise TrainingDataError(f"Unknown schedule {name!r}: choose one of {', '.join(SCHEDULES)}.")
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1), eta_min=lr * 0.01)
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 1))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
