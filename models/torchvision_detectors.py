"""torchvision detectors built by name for detection packages (``architecture.framework`` ``torchvision``).

The network is ``torchvision.models.detection.<arch>`` built with ``weights=None, weights_backbone=None`` (nothing is
ever downloaded), ``num_classes`` from the package (``out_channels`` classes, plus torchvision's background class for
Faster R-CNN and SSDlite) and ``architecture.kwargs``. A package with other than 3 bands gets the first convolution
of the backbone rebuilt for ``in_channels`` bands.

The package's ``input`` describes the one normalisation: the detector's own transform is made neutral
(``image_mean`` 0, ``image_std`` 1, unless ``kwargs`` say otherwise), and at every call its ``min_size`` and
``max_size`` (SSDlite: ``fixed_size``) are set to the size of the tiles given, so tiles are never resized.

:class:`TorchvisionDetector` wraps the network so that it keeps the detection contract of
:mod:`models.detectors`: a float32 batch ``(N, bands, H, W)`` in, per tile ``boxes`` (tile pixels), ``scores`` and
``labels`` as the package's class values out. Its state dict is torchvision's own under the prefix ``model.``;
packages store torchvision's keys (a ``model.state_dict()`` saved by any torchvision training script loads as is).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .errors import ModelPackageError
from .spec import TORCHVISION_DETECTORS, TORCHVISION_RESERVED_KWARGS, Architecture


def has_background(arch: str) -> bool:
    """Whether torchvision counts a background class 0 before the package's classes (Faster R-CNN, SSDlite)."""
    return arch.startswith(("fasterrcnn", "ssd"))


def _first_rgb_conv(net: torch.nn.Module) -> tuple[torch.nn.Module, str, torch.nn.Conv2d]:
    """The parent module, attribute name and module of the first 3-channel convolution (the backbone's stem)."""
    for parent in net.modules():
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.Conv2d) and child.in_channels == 3:
                return parent, name, child
    raise ModelPackageError("No 3-band input convolution found in the detector's backbone.")


def adapt_input_bands(net: torch.nn.Module, bands: int) -> None:
    """Rebuild the backbone's first convolution for ``bands`` input bands (randomly initialised)."""
    parent, name, conv = _first_rgb_conv(net)
    setattr(parent, name, torch.nn.Conv2d(bands, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                          conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode))


def build_torchvision_detector(arch: Architecture, class_values: Sequence[int] = ()) -> TorchvisionDetector:
    """The untrained detector ``arch.arch`` wrapped in :class:`TorchvisionDetector` (labels: ``class_values``, by
    default 0 … out_channels − 1)."""
    from torchvision.models import detection

    if arch.arch not in TORCHVISION_DETECTORS:
        raise ModelPackageError(f"torchvision detector {arch.arch!r} is not supported: choose one of "
                                f"{', '.join(TORCHVISION_DETECTORS)}.")
    reserved = sorted(set(arch.kwargs) & set(TORCHVISION_RESERVED_KWARGS))
    if reserved:
        raise ModelPackageError(f"architecture.kwargs may not set {', '.join(reserved)}: Deep Raster sets them (no "
                                "downloads; num_classes from out_channels).")
    values = tuple(class_values) or tuple(range(arch.out_channels))
    if len(values) != arch.out_channels:
        raise ModelPackageError(f"The detector labels {arch.out_channels} classes but {len(values)} class values "
                                "were given.")
    background = has_background(arch.arch)
    kwargs = {"image_mean": [0.0] * arch.in_channels, "image_std": [1.0] * arch.in_channels, **dict(arch.kwargs)}
    try:
        net = getattr(detection, arch.arch)(weights=None, weights_backbone=None, progress=False,
                                            num_classes=arch.out_channels + int(background), **kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelPackageError(f"torchvision cannot build {arch.arch} with kwargs {dict(arch.kwargs)} ({exc}). "
                                "Check architecture.kwargs in the package.") from exc
    if arch.in_channels != 3:
        adapt_input_bands(net, arch.in_channels)
    return TorchvisionDetector(net, values, int(background), arch.input_scale)


class TorchvisionDetector(torch.nn.Module):
    """A torchvision detector behind the detection contract (see the module docstring).

    Args:
        model: the torchvision detection model.
        values: the class value of each class index (the package's ``classes[]`` in order).
        offset: 1 where torchvision's labels count a background class first, else 0.
        scale: the factor by which the detector's transform resizes each tile (1: never resized); boxes are mapped
            back to tile pixels by torchvision's own post-processing.
    """

    state_prefix = "model."
    """What this wrapper puts before torchvision's state-dict keys (:func:`models.loaders.fitting` adds it)."""

    def __init__(self, model: torch.nn.Module, values: Sequence[int], offset: int, scale: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.values = tuple(int(v) for v in values)
        self.offset = offset
        self.scale = float(scale)

    def fit_size(self, height: int, width: int) -> None:
        """Make the detector's transform resize ``height`` × ``width`` images by exactly :attr:`scale` (1: keep them
        as they are)."""
        transform = self.model.transform
        transform.min_size = (self.scale * min(height, width),)
        transform.max_size = self.scale * max(height, width)
        if transform.fixed_size is not None:
            transform.fixed_size = (round(self.scale * width), round(self.scale * height))

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per tile of ``x`` (N, bands, H, W): boxes (K, 4) in tile pixels, scores (K,), labels (K,) class values."""
        self.fit_size(int(x.shape[-2]), int(x.shape[-1]))
        found = self.model(list(x))
        lut = torch.tensor(self.values, dtype=torch.int64, device=x.device)
        return [{"boxes": f["boxes"], "scores": f["scores"], "labels": lut[f["labels"] - self.offset]}
                for f in found]

    def losses(self, images: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """torchvision's training losses for a batch (train mode): ``targets`` hold ``boxes`` (K, 4) in image pixels
        and ``classes`` (K,), class indexes 0 … out_channels − 1."""
        self.fit_size(int(images.shape[-2]), int(images.shape[-1]))
        wanted = [{"boxes": t["boxes"], "labels": t["classes"] + self.offset} for t in targets]
        return self.model(list(images), wanted)

    def torchvision_state(self) -> dict[str, Any]:
        """The weights under torchvision's own keys (what a package stores)."""
        return dict(self.model.state_dict())


def detections_kwarg(arch: str) -> str:
    """The constructor argument of ``arch`` that caps the boxes per image."""
    return "box_detections_per_img" if arch.startswith("fasterrcnn") else "detections_per_img"
