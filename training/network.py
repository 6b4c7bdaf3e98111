"""The network, its starting weights, the loss and the learning-rate schedule of a training run.

The network is a segmentation-models-pytorch architecture built by :func:`models.loaders.build_network` (never with
downloaded weights). Its starting weights (a package's encoder, or a weights file) are loaded by
:func:`training.initial.load_start`, which adapts the first convolution when the chips' bands differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..models.errors import ModelPackageError
from ..models.spec import Architecture
from .dataset import IGNORE_INDEX
from .errors import TrainingDataError
from .initial import StartingPoint, load_start

ARCHITECTURES = ("Unet", "UnetPlusPlus", "FPN", "DeepLabV3Plus", "Linknet", "MAnet", "PSPNet", "PAN")
LOSSES = ("ce", "ce+dice", "dice", "focal")
SCHEDULES = ("cosine", "onecycle", "constant")


def architecture(arch: str, encoder: str, in_channels: int, classes: int) -> Architecture:
    """The smp architecture of the network to train."""
    if arch not in ARCHITECTURES:
        raise TrainingDataError(f"Unknown architecture {arch!r}: choose one of {', '.join(ARCHITECTURES)}.")
    return Architecture("smp", arch, encoder, in_channels, classes)


def build(arch: Architecture, start: StartingPoint | None, chip_bands: Sequence[str] = (), init: str = "mean",
          info: Callable[[str], None] | None = None, warning: Callable[[str], None] | None = None):
    """The network with random weights, then the tensors of ``start`` when given (see
    :func:`training.initial.load_start`: ``chip_bands`` names the input bands, ``init`` fills the first-layer
    filters of bands the weights lack, ``info`` and ``warning`` receive the log lines)."""
    from ..models.loaders import build_network

    try:
        net = build_network(arch)
    except ModelPackageError as exc:
        raise TrainingDataError(f"segmentation-models-pytorch cannot build {arch.arch} with encoder {arch.encoder!r}: "
                                f"{exc.__cause__ or exc}. Choose another encoder (e.g. resnet18, resnet34, "
                                "efficientnet-b0, mobilenet_v2).") from exc
    if start is not None:
        quiet = lambda line: None  # noqa: E731
        load_start(net, start, chip_bands or [""] * arch.in_channels, arch.in_channels, init, info or quiet,
                   warning or quiet)
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
