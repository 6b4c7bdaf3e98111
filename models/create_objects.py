"""Creating image-classification and object-detection packages: the core behind "Create model package" for the
tasks that Classify objects (``image_classification``) and Detect objects (``object_detection``) apply.

The network is a timm classifier or a torchvision detector built by name (no download) for the request's bands
(``in_channels``) and classes (``out_channels``: one per class; one for a binary sigmoid classifier), given the
weights strictly, or a TorchScript file, which is the model itself. It is run once through the task's contract check
(:func:`models.classifiers.check_classifier`, :func:`models.detectors.check_detector`) before anything is written;
the package is then written with safetensors weights (a trusted pickle is converted) or the TorchScript file copied,
read back and checked again, through a staging folder: a refused request writes nothing.

Tiles: a classifier's ``tile_size`` is its chip size (px; any size, chips are resampled to it, no overlap or size
divisor); a detector's is the default tile of Detect objects, a multiple of ``size_divisor`` (px, default 32), with
``overlap`` (px) and, for torchvision detectors, ``input_scale``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .classifiers import check_classifier
from .create import PackageRequest, check_weights_file, describe, output_channels
from .description import parse_description
from .detectors import check_detector
from .errors import ModelPackageError, WeightsError
from .loaders import build_network, key_differences, load_network
from .package import save_package_file, write_checked_package, write_staged
from .spec import TORCHVISION_DETECTORS, ModelPackage
from .weights import is_torchscript, load_pickled_module, load_torchscript, read_state_dict, unwrap_state_dict

CHECKS: dict[str, Callable[..., Any]] = {"image_classification": check_classifier,
                                         "object_detection": check_detector}
"""The contract check of each task: ``check(package, net=None)`` runs the network once on a random tile."""
BUILT_BY_NAME = {"image_classification": "timm", "object_detection": "torchvision"}
EXAMPLES = {"image_classification": "a timm model name, e.g. resnet18 or convnext_atto",
            "object_detection": f"one of {', '.join(TORCHVISION_DETECTORS)}"}


@dataclass(frozen=True)
class ObjectWeights:
    """What the weights file holds: ``state`` (tensors under the network's own keys) for a network built by name
    (``framework`` timm or torchvision, ``arch``), or None for a TorchScript file (copied as it is)."""

    framework: str
    arch: str
    state: dict[str, Any] | None


def module_arch(module: Any) -> str:
    """The timm model name a pickled timm module records (its ``pretrained_cfg``), or ``""``."""
    config = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None) or {}
    return str(config.get("architecture", "")) if isinstance(config, Mapping) else ""


def read_object_weights(request: PackageRequest) -> ObjectWeights:
    """The weights of a classifier or detector request: TorchScript, safetensors, a plain state dict, or (trusted
    only) a whole pickled module, whose weights are taken and whose timm name is read when none is given."""
    path = check_weights_file(request.weights)
    if is_torchscript(path):
        return ObjectWeights("torchscript", request.arch or "", None)
    framework, arch = BUILT_BY_NAME[request.task], request.arch or ""
    try:
        state = read_state_dict(path)
    except WeightsError as exc:
        if not exc.needs_trust:
            raise
        module = load_pickled_module(path, request.trusted)
        arch = arch or module_arch(module)
        state = unwrap_state_dict(module.state_dict(), path)
    if not arch:
        raise ModelPackageError(f"{path.name} holds only weights: give the architecture they were trained with "
                                f"({EXAMPLES[request.task]}).")
    if framework == "torchvision" and arch not in TORCHVISION_DETECTORS:
        raise ModelPackageError(f"{arch!r} is not a torchvision detector Deep Raster builds: choose one of "
                                f"{', '.join(TORCHVISION_DETECTORS)}, or export the detector to TorchScript.")
    return ObjectWeights(framework, arch, state)


def object_description(request: PackageRequest, weights: ObjectWeights) -> dict[str, Any]:
    """The ``model.json`` content of a classifier or detector request (weights entry: the file it will have)."""
    classifier = request.task == "image_classification"
    if request.input_scale != 1 and weights.framework != "torchvision":
        raise ModelPackageError(f"An input scale ({request.input_scale:g}) is a setting of torchvision detectors, "
                                f"which resize tiles inside; a {weights.framework} detector gets its tiles as they "
                                "are: leave it at 1.")
    if not classifier and request.tile_size % request.size_divisor:
        multiple = request.size_divisor
        lower, upper = request.tile_size // multiple * multiple, -(-request.tile_size // multiple) * multiple
        raise ModelPackageError(f"A detector's tile size must be a multiple of {multiple} px, found "
                                f"{request.tile_size}: choose {lower or upper} or {upper}.")
    architecture = {"framework": weights.framework, **({"arch": weights.arch} if weights.arch else {}),
                    "in_channels": len(request.bands),
                    "out_channels": request.out_channels or (output_channels(request) if classifier
                                                             else len(request.classes)),
                    **({"input_scale": request.input_scale} if request.input_scale != 1 else {})}
    stored = ({"file": "model.torchscript.pt", "format": "torchscript"} if weights.state is None
              else {"file": "weights.safetensors", "format": "safetensors"})
    inference = ({"tile_size": request.tile_size, "activation": request.activation} if classifier else
                 {"tile_size": request.tile_size, "overlap": request.overlap, "size_divisor": request.size_divisor})
    return describe(request, request.task, architecture, stored, inference)


def shape_hint(own: Mapping[str, Any], state: Mapping[str, Any], package: ModelPackage) -> str:
    """What to change when ``state`` does not fit the network's ``own`` state dict: the architecture (other keys),
    the bands (an input convolution of another width) or the classes (a head of another height; the class count the
    weights hold is named)."""
    a = package.architecture
    if set(own) != set(state):
        return f"They are the weights of another network: give the architecture they were trained with, not {a.arch}."
    wrong = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    for key in wrong:
        mine, theirs = tuple(own[key].shape), tuple(state[key].shape)
        if len(mine) == 4 and mine[1] == a.in_channels and (mine[0], *mine[2:]) == (theirs[0], *theirs[2:]):
            return f"They take {theirs[1]} bands ({key}): give {theirs[1]} band names, in model order."
    from .torchvision_detectors import has_background

    background = int(a.framework == "torchvision" and has_background(a.arch))
    outputs = a.out_channels + background
    for key in wrong:
        mine, theirs = tuple(own[key].shape), tuple(state[key].shape)
        if mine[1:] == theirs[1:] and mine[0] % outputs == 0 and theirs[0] % (mine[0] // outputs) == 0:
            found = theirs[0] // (mine[0] // outputs) - background
            sigmoid = " (or activation softmax: sigmoid with two classes is one output)" if \
                package.is_binary_sigmoid else ""
            return (f"They label {found} classes ({key}: {theirs[0]} rows, not {mine[0]}): give {found} classes, "
                    f"one per output, in order{sigmoid}.")
    return f"Check the architecture, the bands ({a.in_channels}) and the classes ({len(package.classes)})."


def fitting_weights(package: ModelPackage, weights_name: str) -> Callable[[Any, Mapping[str, Any]], Mapping[str, Any]]:
    """A ``fit`` for :func:`models.loaders.load_network` that refuses weights not fitting the network with a
    message saying what to change (:func:`shape_hint`)."""

    def fit(net, state: Mapping[str, Any]) -> Mapping[str, Any]:
        prefix = getattr(net, "state_prefix", "")  # a wrapper's prefix; messages name the weights' own keys
        own = {k.removeprefix(prefix): v for k, v in net.state_dict().items()}
        details = key_differences(own, dict(state))
        if details is not None:
            a = package.architecture
            raise ModelPackageError(
                f"The weights in {weights_name} do not fit {a.framework} {a.arch} with {a.in_channels} band(s) and "
                f"{len(package.classes)} class(es). {shape_hint(own, state, package)} Nothing was written. "
                f"({details})")
        return {f"{prefix}{k}": v for k, v in state.items()}

    return fit


def create_object_package(request: PackageRequest) -> Path:
    """Check everything, then write an image-classification or object-detection package (a folder, or a ``.drpk``
    file); returns its path."""
    weights = read_object_weights(request)
    description = object_description(request, weights)
    package = parse_description(description, request.output)
    check = CHECKS[request.task]
    if weights.state is None:
        check(package, load_torchscript(request.weights))
        return write_staged(request.output, lambda folder: save_package_file(
            folder, description, request.weights, description["weights"]["file"]), check)
    values = [c.value for c in package.classes]
    net = load_network(lambda: build_network(package.architecture, values), weights.state,
                       fitting_weights(package, request.weights.name))
    check(package, net)
    return write_checked_package(request.output, description, weights.state, check)
