"""Creating a model package from a trained network: the core behind "Create model package".

Three tasks: ``pixel_classification`` (here: an smp network, Classify pixels), ``image_classification`` (a timm
classifier, Classify objects) and ``object_detection`` (a torchvision detector, Detect objects); the last two are
:mod:`models.create_objects`. Weights may be safetensors, a plain state dict, TorchScript, or a whole pickled module
(``torch.save(model)``, only when the user trusts the file). A pickled smp module's architecture, encoder and channel
counts are read from the module itself and its weights are converted to safetensors (the default), so the package
never needs a pickle again. Normalisation can be given or computed from a sample of a raster's valid pixels. The
result is checked by building the network, loading the weights strictly and running it once before it is written;
a refused request writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..tiling.source import RasterSource
from .description import parse_description
from .errors import ModelPackageError, WeightsError
from .loaders import build_network, fitting, load_network
from .package import save_package, save_package_file, write_staged
from .spec import FORMAT_NAME, FORMAT_VERSION
from .weights import is_torchscript, load_pickled_module, load_torchscript, read_state_dict

CREATABLE_TASKS = ("pixel_classification", "image_classification", "object_detection")
"""The tasks "Create model package" writes (the first is the default)."""
TASK_FRAMEWORKS = {"pixel_classification": ("smp", "timm"), "image_classification": ("timm",),
                   "object_detection": ("torchvision",)}
"""Frameworks whose networks are built by name for each task (a TorchScript file is recognised in every task)."""
FRAMEWORK_BUILDS = {"smp": "segmentation networks (task pixel_classification)",
                    "timm": "image classifiers (task image_classification)",
                    "torchvision": "object detectors (task object_detection)"}
UNUSED_SETTINGS = {
    "image_classification": {"overlap": "a classifier reads one chip per feature, no overlapping tiles",
                             "keep_pickle": "a trusted pickle is always converted to safetensors"},
    "object_detection": {"activation": "a detector returns its confidences in 0–1 itself",
                         "keep_pickle": "a trusted pickle is always converted to safetensors"},
}
"""Per task, settings it does not use and why: changed from their defaults, they are ignored with a note."""


@dataclass
class PackageRequest:
    """What the user gives. ``None`` means "detect it from the weights" (architecture) or "not stated".

    ``normalization_raster`` with ``normalization_bands`` (1-based) computes per-band mean/std in model units
    (raster value × ``value_scale`` + ``value_offset``) over at most ``sample_size`` valid pixels.
    """

    weights: Path
    output: Path  # a folder, or a file ending in .drpk
    name: str
    bands: Sequence[str]
    classes: Sequence[dict[str, Any]]
    license: str
    description: str = ""
    version: str = "1.0.0"
    authors: Sequence[str] = ()
    attribution: str = ""
    framework: str | None = None
    arch: str | None = None
    encoder: str | None = None
    out_channels: int | None = None
    value_scale: float = 1.0
    value_offset: float = 0.0
    expected_range: tuple[float, float] | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    normalization_raster: Path | None = None
    normalization_bands: Sequence[int] = ()
    sample_size: int = 100_000
    tile_size: int = 256
    overlap: int = 64
    size_divisor: int = 32
    activation: str = "softmax"
    resolution_m: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    """The conditions the model was trained under (``training`` in model.json: tile_size, pixel_size_m ...)."""
    trusted: bool = False
    keep_pickle: bool = False
    task: str = "pixel_classification"
    """One of :data:`CREATABLE_TASKS`."""
    input_scale: float = 1.0
    """torchvision detectors only: the factor (0–8] by which the detector resizes each tile inside, as in training."""


@dataclass
class _Weights:
    framework: str
    arch: str
    encoder: str
    in_channels: int
    out_channels: int
    state_dict: dict | None  # None: copy the file as it is (TorchScript, or a kept pickle)
    fmt: str


def describe_smp_module(module) -> tuple[str, str, int, int]:
    """(architecture, encoder, in_channels, out_channels) of a segmentation-models-pytorch module."""
    import segmentation_models_pytorch as smp
    import torch

    archs = {cls.__name__ for cls in smp._MODEL_ARCHITECTURES}
    arch = type(module).__name__
    name = getattr(module, "name", "")
    if arch not in archs or "-" not in name:
        raise ModelPackageError(
            f"The pickled model is a {arch}, not a segmentation-models-pytorch architecture "
            f"({', '.join(sorted(archs))}); give the architecture explicitly, or export the model to TorchScript."
        )
    convs = [m for m in module.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    head = [m for m in module.segmentation_head.modules() if isinstance(m, torch.nn.Conv2d)]
    return arch, name.split("-", 1)[1], convs[0].in_channels, head[-1].out_channels


def check_weights_file(path: Path) -> Path:
    """``path`` if it is a file; else a message naming what it is and what to choose."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ModelPackageError(f"The weights file {path} {what}. Choose the file that holds the trained model or "
                                "its weights (.pt, .pth, .ckpt or .safetensors).")
    return path


def check_choices(request: PackageRequest) -> None:
    """Refuse a task this tool does not make, and settings that contradict the task (a framework of another task,
    an encoder outside segmentation, an input scale outside torchvision detectors)."""
    task = request.task
    if task not in CREATABLE_TASKS:
        raise ModelPackageError(f"Create model package makes packages of task {', '.join(CREATABLE_TASKS)}; "
                                f"{task!r} is not one of them.")
    framework = request.framework
    if framework and framework != "torchscript" and framework not in TASK_FRAMEWORKS[task]:
        builds = FRAMEWORK_BUILDS.get(framework, "no network this tool knows")
        raise ModelPackageError(
            f"Framework {framework!r} builds {builds}, not {task} models: choose framework "
            f"{' or '.join(TASK_FRAMEWORKS[task])} (or 'detect' for a TorchScript file), or the task that fits the "
            "weights.")
    if request.encoder and task != "pixel_classification":
        raise ModelPackageError(f"An encoder ({request.encoder!r}) belongs to a segmentation network (task "
                                f"pixel_classification); a model of task {task} is named by its architecture alone "
                                "(e.g. resnet18, fasterrcnn_resnet50_fpn): leave the encoder empty.")
    if request.input_scale != 1 and task != "object_detection":
        raise ModelPackageError(f"An input scale ({request.input_scale:g}) is a setting of torchvision detectors "
                                f"(task object_detection), which resize tiles inside; a model of task {task} gets its "
                                "tiles as they are: leave it at 1.")


def ignored_settings(request: PackageRequest) -> list[str]:
    """Notes on settings changed from their defaults that the request's task does not use (:data:`UNUSED_SETTINGS`)."""
    defaults = {f.name: f.default for f in fields(PackageRequest) if f.default is not MISSING}
    return [f"{name.replace('_', ' ')} {getattr(request, name)!r} ignored: {request.task} packages do not use it "
            f"({why})." for name, why in UNUSED_SETTINGS.get(request.task, {}).items()
            if getattr(request, name) != defaults[name]]


def _read_weights(request: PackageRequest, n_bands: int) -> _Weights:
    path = check_weights_file(request.weights)
    if is_torchscript(path):
        return _Weights("torchscript", "", "", n_bands, request.out_channels or len(request.classes), None,
                        "torchscript")
    if path.suffix.lower() != ".safetensors":
        try:
            state = read_state_dict(path, "state_dict")
        except WeightsError as exc:
            if not exc.needs_trust:
                raise
            module = load_pickled_module(path, request.trusted)
            arch, encoder, in_ch, out_ch = describe_smp_module(module)
            if request.keep_pickle:
                return _Weights("smp", arch, encoder, in_ch, out_ch, None, "pickled_module")
            return _Weights("smp", arch, encoder, in_ch, out_ch, module.state_dict(), "safetensors")
    else:
        state = read_state_dict(path, "safetensors")
    if not (request.arch and (request.encoder or request.framework == "timm")):
        raise ModelPackageError(
            f"{path.name} holds only weights (a state dict): give the architecture (framework, architecture name and "
            "encoder) it was trained with."
        )
    return _Weights(request.framework or "smp", request.arch, request.encoder or "", n_bands,
                    request.out_channels or output_channels(request), state, "safetensors")


def output_channels(request: PackageRequest) -> int:
    """One output channel for a binary sigmoid model (two classes), else one per class."""
    binary = request.activation == "sigmoid" and len(request.classes) == 2
    return 1 if binary else len(request.classes)


def sample_band_statistics(raster: Path, bands: Sequence[int], scale: float, offset: float,
                           sample_size: int, seed: int = 0) -> tuple[list[float], list[float]]:
    """Per-band mean and std in model units (raster value × ``scale`` + ``offset``) over a uniform random sample of
    at most ``sample_size`` valid pixels, drawn in bounded memory (nodata, NaN and masked pixels excluded)."""
    from ..tiling.pixel_sampling import sample_valid_pixels

    source = RasterSource.open(str(raster))
    sample = sample_valid_pixels(source, bands, sample_size, seed, allow_fewer=True)
    if sample.values.shape[0] < 2:
        raise ModelPackageError(f"{raster} has too few valid pixels in bands {list(bands)} to compute statistics.")
    values = sample.values.astype(np.float64) * scale + offset
    return values.mean(axis=0).tolist(), np.maximum(values.std(axis=0), 1e-12).tolist()


def _normalization(request: PackageRequest, n_bands: int) -> dict[str, Any]:
    if request.mean is not None or request.std is not None:
        if request.mean is None or request.std is None or len(request.mean) != n_bands or len(request.std) != n_bands:
            raise ModelPackageError(f"Give one mean and one std per band ({n_bands} each).")
        return {"type": "mean_std", "mean": list(map(float, request.mean)), "std": list(map(float, request.std))}
    if request.normalization_raster is not None:
        if len(request.normalization_bands) != n_bands:
            raise ModelPackageError(f"Choose {n_bands} bands of the sample raster (one per model band) to compute "
                                    f"the normalisation; {len(request.normalization_bands)} were given.")
        mean, std = sample_band_statistics(request.normalization_raster, request.normalization_bands,
                                           request.value_scale, request.value_offset, request.sample_size)
        return {"type": "mean_std", "mean": mean, "std": std, "computed_from": {
            "raster": request.normalization_raster.name, "bands": list(request.normalization_bands),
            "sample_size": request.sample_size}}
    return {"type": "none"}


def describe(request: PackageRequest, task: str, architecture: dict[str, Any], weights: dict[str, Any],
             inference: dict[str, Any]) -> dict[str, Any]:
    """The ``model.json`` content of any task: the request's identity, licence, input (bands, value scale,
    normalisation), classes, training conditions and provenance around the task's own parts."""
    return {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "name": request.name, "version": request.version, "description": request.description,
        "authors": list(request.authors), "license": request.license, "attribution": request.attribution,
        "task": task, "architecture": architecture, "weights": weights,
        "input": {
            "bands": [{"name": b} for b in request.bands],
            "value_scale": request.value_scale, "value_offset": request.value_offset,
            **({"expected_range": list(request.expected_range)} if request.expected_range else {}),
            "normalization": _normalization(request, len(request.bands)),
            **({"resolution_m": request.resolution_m} if request.resolution_m else {}),
        },
        "inference": inference,
        "classes": list(request.classes),
        **({"training": dict(request.training)} if request.training else {}),
        "provenance": {**request.provenance, "weights_source": request.weights.name},
    }


def build_description(request: PackageRequest, weights: _Weights, weights_name: str) -> dict[str, Any]:
    """The ``model.json`` content of a pixel-classification request and its inspected weights."""
    n_bands = len(request.bands)
    if weights.in_channels != n_bands:
        raise ModelPackageError(f"The model takes {weights.in_channels} input bands but {n_bands} band names were "
                                f"given ({', '.join(request.bands)}). Give one name per input band, in order.")
    architecture = {"framework": weights.framework, "arch": weights.arch, "encoder": weights.encoder,
                    "in_channels": weights.in_channels, "out_channels": weights.out_channels}
    return describe(request, "pixel_classification", {k: v for k, v in architecture.items() if v != ""},
                    {"file": weights_name, "format": weights.fmt},
                    {"tile_size": request.tile_size, "overlap": request.overlap,
                     "size_divisor": request.size_divisor, "activation": request.activation})


def _dry_run(net, in_channels: int, out_channels: int, size: int) -> tuple[int, ...]:
    """Run the network once on random input of ``size`` px; raise if the output is not (1, out, size, size)."""
    import torch

    with torch.inference_mode():
        out = net.eval()(torch.randn(1, in_channels, size, size))
    if tuple(out.shape) != (1, out_channels, size, size):
        raise ModelPackageError(f"A test run gave output shape {tuple(out.shape)}; expected "
                                f"(1, {out_channels}, {size}, {size}). Check out_channels and the architecture.")
    return tuple(out.shape)


def create_package(request: PackageRequest, info: Callable[[str], None] | None = None) -> Path:
    """Check everything, then write the package folder (or ``.drpk`` archive); returns its path. ``info`` gets notes
    on settings the task does not use (:func:`ignored_settings`)."""
    check_choices(request)
    for note in ignored_settings(request) if info else ():
        info(note)
    if request.task != "pixel_classification":
        from .create_objects import create_object_package

        return create_object_package(request)
    weights = _read_weights(request, len(request.bands))
    weights_name = {"torchscript": "model.torchscript.pt", "pickled_module": "model.pickle.pt"}.get(
        weights.fmt, "weights.safetensors")
    description = build_description(request, weights, weights_name)
    size = max(request.size_divisor * 2, 64)
    if weights.state_dict is not None:
        package = parse_description(description, request.output)
        net = load_network(lambda: build_network(package.architecture), weights.state_dict, fitting(package))
        _dry_run(net, weights.in_channels, weights.out_channels, size)
        return write_staged(request.output, lambda folder: save_package(folder, description, weights.state_dict))
    net = (load_torchscript(request.weights) if weights.fmt == "torchscript"
           else load_pickled_module(request.weights, request.trusted))
    _dry_run(net, weights.in_channels, weights.out_channels, size)
    return write_staged(request.output,
                        lambda folder: save_package_file(folder, description, request.weights, weights_name))
