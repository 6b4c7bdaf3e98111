"""Image classifiers in packages (task ``image_classification``): loading one, and reading what it returns.

The contract (docs/model-package.md, "Image classification"): the network, a timm model built by name
(``architecture.arch``, ``in_channels`` bands, ``out_channels`` classes) or a TorchScript module, takes a float32
tensor ``(N, bands, S, S)`` of chips, S = ``inference.tile_size`` px, in the package's bands, value scale and
normalisation (invalid pixels 0), and returns ``(N, out_channels)`` scores; ``inference.activation`` makes them
probabilities (``softmax`` over the classes; ``sigmoid`` per class, or, with one output channel, the probability of
the second of two classes; ``none``: already probabilities). Output channel i is class i of ``classes[]``.
"""

from __future__ import annotations

import numpy as np

from .errors import ModelPackageError
from .inputs import check_task
from .spec import ModelPackage


def load_classifier(package: ModelPackage, trusted: bool = False, verify: bool = True):
    """The package's classifier as a torch module in eval mode on the CPU (an image-classification package only;
    a whole pickled model only when ``trusted``)."""
    from .loaders import load_model

    check_task(package, "image_classification")
    return load_model(package, verify=verify, trusted=trusted)


def class_probabilities(output: np.ndarray, package: ModelPackage, chips: int) -> np.ndarray:
    """``(chips, classes)`` probabilities from a classifier's activated output on ``chips`` chips; raises
    :class:`ModelPackageError` when its shape breaks the contract (e.g. a segmentation network's maps)."""
    channels = package.architecture.out_channels
    output = np.asarray(output, dtype=np.float32)
    if output.ndim < 2 or output.shape[0] != chips or output[0].size != channels:
        raise ModelPackageError(
            f"The classifier of {package.name!r} returned shape {tuple(output.shape)} for {chips} chip(s): an "
            f"image-classification package returns ({chips}, {channels}) scores, one per class (architecture."
            "out_channels). Is it a segmentation network? Those are pixel_classification packages.")
    output = output.reshape(chips, channels)
    if package.is_binary_sigmoid:
        return np.concatenate([1.0 - output, output], axis=1)
    return output


def best_classes(probabilities: np.ndarray, package: ModelPackage) -> tuple[np.ndarray, np.ndarray]:
    """Per chip the class value with the highest probability (ties: the first class) and that probability
    (0–1, the confidence)."""
    values = np.asarray([c.value for c in package.classes], dtype=np.int64)
    best = np.argmax(probabilities, axis=1)
    return values[best], probabilities[np.arange(len(best)), best].astype(np.float64)


def check_classifier(package: ModelPackage, net=None) -> np.ndarray:
    """Run the package's classifier (``net``, or loaded strictly from the package) once on a random chip of its chip
    size and check its output against the contract; the chip's class probabilities ``(1, classes)``."""
    import torch

    net = load_classifier(package) if net is None else net
    with torch.inference_mode():
        out = net.eval()(torch.randn(1, package.architecture.in_channels, package.tile_size, package.tile_size))
    if package.activation == "softmax":
        out = torch.softmax(out, dim=1)
    return class_probabilities(out.numpy(), package, 1)
