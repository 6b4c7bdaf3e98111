"""Object detectors in packages (task ``object_detection``): loading one, and reading what it returns.

The contract (docs/model-package.md, "Object detection"): the detector (a TorchScript module, or a torchvision
detector wrapped by :mod:`models.torchvision_detectors`) takes a float32 tensor ``(N, bands, H, W)`` of normalised
tiles and returns, per image, ``boxes`` ``(K, 4)`` as ``x1, y1, x2, y2`` in tile
pixels (origin at the top-left corner of the tile's top-left pixel, x to the right, y down, x2 / y2 the far edges),
``scores`` ``(K,)`` in 0–1 and ``labels`` ``(K,)``, the class values of the package's class table. Per image either a
dict with those keys (torchvision's form) or a ``(boxes, scores, labels)`` tuple; a scripted torchvision detector's
``(losses, detections)`` pair is accepted too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelPackageError
from .inputs import check_task
from .spec import ModelPackage

KEYS = ("boxes", "scores", "labels")


@dataclass(frozen=True)
class Detections:
    """The detections of one tile: ``boxes`` (K, 4) float64 x1, y1, x2, y2 (px), ``scores`` (K,) float32,
    ``labels`` (K,) int64 class values."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep: np.ndarray) -> Detections:
        """The detections picked by a boolean mask or an index array."""
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.int64))


def load_detector(package: ModelPackage, verify: bool = True):
    """The package's detector as a torch module in eval mode on the CPU (a detection package only)."""
    from .loaders import load_model

    check_task(package, "object_detection")
    return load_model(package, verify=verify)


def check_detector(package: ModelPackage, net=None) -> Detections:
    """Run the package's detector (``net``, or loaded from the package) once on a random tile of its tile size and
    check the output against the contract; the detections of that tile."""
    import torch

    net = load_detector(package) if net is None else net
    with torch.inference_mode():
        out = net.eval()(torch.rand(1, package.architecture.in_channels, package.tile_size, package.tile_size))
    return parse_detections(out, 1, f"The detector of {package.name!r}")[0]


def write_detection_package(output: Path, description: Mapping[str, Any], state: Mapping[str, Any]) -> Path:
    """Write a detection package with safetensors ``state`` (a folder, or a ``.drpk`` file): the description
    validated, the weights saved, the package read back, loaded strictly and run once (:func:`check_detector`)
    before the folder or archive is complete; returns its path."""
    from .package import write_checked_package

    return write_checked_package(output, description, state, check_detector)


def parse_detections(output: Any, images: int, name: str = "the detector") -> list[Detections]:
    """``output`` of one forward call on ``images`` tiles as one :class:`Detections` per tile; raises
    :class:`ModelPackageError` naming what breaks the contract (see the module docstring)."""
    if isinstance(output, tuple) and len(output) == 2 and isinstance(output[1], list):
        output = output[1]  # a scripted torchvision detector: (losses, detections)
    if not isinstance(output, (list, tuple)) or len(output) != images:
        found = f"a {type(output).__name__}" + (f" of {len(output)}" if isinstance(output, (list, tuple)) else "")
        raise ModelPackageError(f"{name} must return one result per image ({images}), found {found}. A detection "
                                "package returns, per image, boxes (K, 4), scores (K,) and labels (K,).")
    return [_one(item, i, name) for i, item in enumerate(output)]


def _one(item: Any, index: int, name: str) -> Detections:
    if isinstance(item, dict):
        missing = [k for k in KEYS if k not in item]
        if missing:
            raise ModelPackageError(f"{name}'s result for image {index} lacks {', '.join(missing)} (it has "
                                    f"{', '.join(map(str, item)) or 'nothing'}).")
        parts = [item[k] for k in KEYS]
    elif isinstance(item, (list, tuple)) and len(item) == 3:
        parts = list(item)
    else:
        raise ModelPackageError(f"{name}'s result for image {index} is a {type(item).__name__}: expected a dict "
                                "with boxes, scores and labels, or a (boxes, scores, labels) tuple.")
    boxes, scores, labels = (np.asarray(_numpy(p)) for p in parts)
    k = len(scores.reshape(-1))
    if boxes.reshape(-1).size != 4 * k or labels.reshape(-1).size != k:
        raise ModelPackageError(f"{name}'s result for image {index} has boxes of shape {boxes.shape}, scores "
                                f"{scores.shape} and labels {labels.shape}: expected (K, 4), (K,) and (K,).")
    return Detections(boxes.reshape(k, 4).astype(np.float64), scores.reshape(k).astype(np.float32),
                      labels.reshape(k).astype(np.int64))


def _numpy(value: Any) -> Any:
    """A torch tensor as a numpy array (on the CPU); anything else as it is."""
    return value.detach().float().cpu().numpy() if hasattr(value, "detach") else value
