"""Reading a model description (``model.json`` content) into a validated :class:`ModelPackage`.

Every problem found is collected and reported at once, each with its JSON path (``$.input.bands[2].name``).
Nothing here reads weights or imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ModelPackageError
from .spec import (
    ACTIVATIONS,
    CLASSIFIER_FRAMEWORKS,
    DESCRIPTION_FILE,
    DETECTION_FRAMEWORKS,
    FORMAT_NAME,
    FORMAT_VERSION,
    FRAMEWORKS,
    NODATA_CLASS,
    NORMALIZATION_TYPES,
    RESERVED_TASKS,
    TASKS,
    TORCHVISION_DETECTORS,
    TORCHVISION_RESERVED_KWARGS,
    WEIGHT_FORMATS,
    Architecture,
    BandSpec,
    ClassSpec,
    ModelPackage,
    Normalization,
    TrainingConditions,
)

_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


class _Problems:
    """Collects validation problems with their JSON path, so all are reported together."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}")

    def get(self, obj: Mapping[str, Any], key: str, path: str, kind: type | tuple[type, ...], required: bool = True,
            default: Any = None) -> Any:
        """``obj[key]`` if present and of ``kind``; records a problem and returns ``default`` otherwise."""
        if not isinstance(obj, Mapping) or key not in obj:
            if required:
                self.add(f"{path}.{key}", "missing")
            return default
        value = obj[key]
        if kind in (int, float, (int, float)) and isinstance(value, bool):
            self.add(f"{path}.{key}", f"expected a number, found {value!r}")
            return default
        if not isinstance(value, kind):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            self.add(f"{path}.{key}", f"expected {expected}, found {type(value).__name__} {value!r:.60}")
            return default
        return value

    def raise_if_any(self, source: Path) -> None:
        if self.items:
            listing = "\n  - ".join(self.items)
            raise ModelPackageError(f"The model package {source} is not valid:\n  - {listing}")



def parse_description(raw: Mapping[str, Any], folder: Path) -> ModelPackage:
    """Validate a description dict; ``folder`` anchors relative weight paths."""
    p = _Problems()
    fmt = p.get(raw, "format", "$", str)
    if fmt is not None and fmt != FORMAT_NAME:
        p.add("$.format", f"expected {FORMAT_NAME!r}, found {fmt!r}")
    version = p.get(raw, "format_version", "$", str)
    if version is not None and version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
        p.add("$.format_version", f"this plugin reads format {FORMAT_VERSION}; found {version!r}: update the plugin")
    task = p.get(raw, "task", "$", str, default="")
    if task in RESERVED_TASKS:
        p.add("$.task", f"task {task!r} is reserved and not supported by this version of the plugin")
    elif task and task not in TASKS:
        p.add("$.task", f"expected one of {', '.join(TASKS)}, found {task!r}")

    architecture = _parse_architecture(p.get(raw, "architecture", "$", dict, default={}), p)

    weights_raw = p.get(raw, "weights", "$", dict, default={})
    weights_name = p.get(weights_raw, "file", "$.weights", str, default="")
    weights_file = _inside(folder, weights_name, "$.weights.file", p) if weights_name else folder
    weights_format = p.get(weights_raw, "format", "$.weights", str, required=False,
                           default=_format_from_suffix(weights_name))
    if weights_format not in WEIGHT_FORMATS:
        p.add("$.weights.format", f"expected one of {', '.join(WEIGHT_FORMATS)}, found {weights_format!r}")
    if (weights_format == "torchscript") != (architecture.framework == "torchscript"):
        p.add("$.weights.format", "TorchScript weights go with architecture.framework 'torchscript', and only then")
    sha256 = p.get(weights_raw, "sha256", "$.weights", str, required=False)
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        p.add("$.weights.sha256", "expected 64 hexadecimal digits")

    inp = p.get(raw, "input", "$", dict, default={})
    bands = _parse_bands(p.get(inp, "bands", "$.input", list, default=[]), p)
    if architecture.in_channels and bands and len(bands) != architecture.in_channels:
        p.add("$.input.bands", f"lists {len(bands)} bands but architecture.in_channels is {architecture.in_channels}")
    value_scale = float(p.get(inp, "value_scale", "$.input", (int, float), required=False, default=1.0))
    value_offset = float(p.get(inp, "value_offset", "$.input", (int, float), required=False, default=0.0))
    if value_scale == 0:
        p.add("$.input.value_scale", "must not be 0")
    rng = p.get(inp, "expected_range", "$.input", list, required=False)
    expected_range = _parse_range(rng, p)
    normalization = _parse_normalization(p.get(inp, "normalization", "$.input", dict, required=False,
                                               default={"type": "none"}), len(bands), p)

    resolution = p.get(inp, "resolution_m", "$.input", dict, required=False, default={})
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in resolution.values()):
        p.add("$.input.resolution_m", "expected positive numbers (min, max, recommended) in metres")
        resolution = {}

    inf = p.get(raw, "inference", "$", dict, default={})
    tile_size = p.get(inf, "tile_size", "$.inference", int, default=256)
    output_stride = p.get(inf, "output_stride", "$.inference", int, required=False, default=1)
    if output_stride < 1 or (tile_size > 0 and tile_size % output_stride):
        p.add("$.inference.output_stride", f"must be ≥ 1 and divide tile_size {tile_size}, found {output_stride}")
    overlap = p.get(inf, "overlap", "$.inference", int, required=False, default=max(tile_size // 4, 0))
    size_divisor = p.get(inf, "size_divisor", "$.inference", int, required=False, default=1)
    edge_margin = p.get(inf, "edge_margin", "$.inference", int, required=False, default=0)
    if not 0 <= edge_margin < max(tile_size - overlap, 1):
        p.add("$.inference.edge_margin", f"must be between 0 and tile_size − overlap − 1, found {edge_margin}")
        edge_margin = 0
    activation = p.get(inf, "activation", "$.inference", str, default="none",
                       required=task in ("pixel_classification", "image_classification"))
    if activation not in ACTIVATIONS:
        p.add("$.inference.activation", f"expected one of {', '.join(ACTIVATIONS)}, found {activation!r}")
    if size_divisor < 1:
        p.add("$.inference.size_divisor", "must be at least 1")
    elif tile_size < 1 or tile_size % size_divisor:
        p.add("$.inference.tile_size", f"must be a positive multiple of size_divisor {size_divisor}, found {tile_size}")
    if not 0 <= overlap < tile_size:
        p.add("$.inference.overlap", f"must be between 0 and tile_size − 1, found {overlap}")

    training = _parse_training(p.get(raw, "training", "$", dict, required=False, default={}), p)
    if training.tile_size is not None and tile_size != training.tile_size:
        p.add("$.inference.tile_size", f"the default tile must be the training tile ({training.tile_size} px), "
                                       f"found {tile_size}")

    classes: tuple[ClassSpec, ...] = ()
    if task in ("pixel_classification", "object_detection", "image_classification"):
        classes = _parse_classes(p.get(raw, "classes", "$", list, default=[]), p)
    if task == "object_detection":
        _check_detector(architecture, classes, p)
    elif architecture.framework == "torchvision":
        p.add("$.architecture.framework", f"framework 'torchvision' holds a detector: its task is "
                                          f"'object_detection' (for Detect objects), found {task!r}")
    if task == "image_classification" and architecture.framework not in ("", *CLASSIFIER_FRAMEWORKS):
        p.add("$.architecture.framework", f"task 'image_classification' takes a timm model or a TorchScript "
                                          f"classifier, found {architecture.framework!r} (a segmentation network "
                                          "is a pixel_classification package, for Classify pixels)")
    expected_classes = 2 if (architecture.out_channels == 1 and activation == "sigmoid") else architecture.out_channels
    if task in ("pixel_classification", "image_classification") and classes and expected_classes \
            and len(classes) != expected_classes:
        p.add("$.classes", f"lists {len(classes)} classes but the model has {architecture.out_channels} output "
                           f"channel(s) with activation {activation!r}: expected {expected_classes}")

    package = ModelPackage(
        folder=folder.resolve(),
        name=p.get(raw, "name", "$", str, default=""),
        version=str(p.get(raw, "version", "$", (str, int, float), required=False, default="")),
        description=p.get(raw, "description", "$", str, required=False, default=""),
        task=task,
        architecture=architecture,
        weights_file=weights_file,
        weights_format=weights_format,
        weights_sha256=sha256,
        bands=bands,
        value_scale=value_scale,
        value_offset=value_offset,
        expected_range=expected_range,
        normalization=normalization,
        tile_size=tile_size,
        overlap=overlap,
        size_divisor=size_divisor,
        activation=activation,
        classes=classes,
        license=p.get(raw, "license", "$", str, default=""),
        attribution=p.get(raw, "attribution", "$", str, required=False, default=""),
        output_stride=output_stride,
        edge_margin=edge_margin,
        authors=tuple(_string_list(raw, "authors", "$", p)),
        resolution_m=resolution,
        training=training,
        provenance=p.get(raw, "provenance", "$", dict, required=False, default={}),
        raw=raw,
    )
    p.raise_if_any(folder / DESCRIPTION_FILE)
    return package


def _check_detector(architecture: Architecture, classes: tuple[ClassSpec, ...], p: _Problems) -> None:
    """An ``object_detection`` package: a TorchScript detector, or a torchvision detector named in
    :data:`TORCHVISION_DETECTORS` without constructor arguments Deep Raster sets itself, whose ``out_channels`` is the
    number of classes it labels (docs/model-package.md, "Object detection")."""
    framework, arch = architecture.framework, architecture.arch
    if framework and framework not in DETECTION_FRAMEWORKS:
        named = f" {arch!r}" if arch else ""
        p.add("$.architecture.framework",
              f"task 'object_detection' takes framework 'torchscript' (a scripted detector) or 'torchvision' (a "
              f"detector built by name), found {framework!r}{named}")
    if framework == "torchvision":
        if arch and arch not in TORCHVISION_DETECTORS:
            p.add("$.architecture.arch", f"expected one of {', '.join(TORCHVISION_DETECTORS)}, found {arch!r}")
        for key in TORCHVISION_RESERVED_KWARGS:
            if key in architecture.kwargs:
                p.add(f"$.architecture.kwargs.{key}", "set by Deep Raster (no downloads; num_classes from "
                                                      "out_channels): leave it out")
    if classes and architecture.out_channels and len(classes) != architecture.out_channels:
        p.add("$.classes", f"lists {len(classes)} classes but architecture.out_channels is "
                           f"{architecture.out_channels}: a detector's out_channels is the number of classes it labels")


def _format_from_suffix(name: str) -> str:
    return "safetensors" if name.lower().endswith(".safetensors") else "state_dict"


def _string_list(obj: Mapping[str, Any], key: str, path: str, p: _Problems) -> list[str]:
    values = p.get(obj, key, path, list, required=False, default=[])
    if not all(isinstance(v, str) for v in values):
        p.add(f"{path}.{key}", "expected a list of strings")
        return []
    return values


def _parse_architecture(arch_raw: Mapping[str, Any], p: _Problems) -> Architecture:
    path = "$.architecture"
    framework = p.get(arch_raw, "framework", path, str, default="")
    if framework and framework not in FRAMEWORKS:
        p.add(f"{path}.framework", f"expected one of {', '.join(FRAMEWORKS)}, found {framework!r}")
    needs_arch = framework in ("smp", "timm", "torchvision")
    architecture = Architecture(
        framework=framework,
        arch=p.get(arch_raw, "arch", path, str, required=needs_arch, default=""),
        encoder=p.get(arch_raw, "encoder", path, str, required=framework == "smp", default=""),
        in_channels=p.get(arch_raw, "in_channels", path, int, default=0),
        out_channels=p.get(arch_raw, "out_channels", path, int, default=0),
        kwargs=p.get(arch_raw, "kwargs", path, dict, required=False, default={}),
        input_scale=_input_scale(arch_raw, framework, p),
    )
    for key in ("in_channels", "out_channels"):
        value = arch_raw.get(key, 1)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            p.add(f"{path}.{key}", "must be at least 1")
    return architecture


def _input_scale(arch_raw: Mapping[str, Any], framework: str, p: _Problems) -> float:
    """``architecture.input_scale``: a number in (0, 8], only for torchvision detectors (default 1: no resize)."""
    value = arch_raw.get("input_scale", 1.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 8:
        p.add("$.architecture.input_scale", f"expected a number above 0 and at most 8, found {value!r}")
        return 1.0
    if value != 1 and framework != "torchvision":
        p.add("$.architecture.input_scale", "only torchvision detectors resize their tiles: leave it out")
    return float(value)


def _inside(folder: Path, name: str, path: str, p: _Problems) -> Path:
    """``folder / name`` if it stays inside ``folder`` (no absolute paths, no ``..`` escapes)."""
    candidate = (folder / name).resolve()
    if Path(name).is_absolute() or not candidate.is_relative_to(folder.resolve()):
        p.add(path, f"must be a file name inside the package folder, found {name!r}")
        return folder
    return candidate


def _parse_bands(items: Sequence[Any], p: _Problems) -> tuple[BandSpec, ...]:
    bands = []
    for i, item in enumerate(items):
        path = f"$.input.bands[{i}]"
        if isinstance(item, str):
            bands.append(BandSpec(name=item))
            continue
        if not isinstance(item, dict):
            p.add(path, f"expected an object with a name, found {item!r:.60}")
            continue
        aliases = p.get(item, "aliases", path, list, required=False, default=[])
        if not all(isinstance(a, str) for a in aliases):
            p.add(f"{path}.aliases", "expected a list of strings")
            aliases = []
        wavelength = p.get(item, "wavelength_nm", path, (int, float), required=False)
        default_band = p.get(item, "default_band", path, int, required=False)
        if default_band is not None and default_band < 1:
            p.add(f"{path}.default_band", f"band numbers start at 1, found {default_band}")
            default_band = None
        bands.append(BandSpec(name=p.get(item, "name", path, str, default=f"band{i + 1}"), aliases=tuple(aliases),
                              wavelength_nm=None if wavelength is None else float(wavelength),
                              default_band=default_band))
    if not bands:
        p.add("$.input.bands", "must list at least one band")
    return tuple(bands)


def _parse_range(rng: Any, p: _Problems, path: str = "$.input.expected_range") -> tuple[float, float] | None:
    if rng is None:
        return None
    if not isinstance(rng, list) or len(rng) != 2 \
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng) or rng[0] >= rng[1]:
        p.add(path, f"expected [low, high] with low < high, found {rng!r:.60}")
        return None
    return float(rng[0]), float(rng[1])


def _parse_training(raw: Mapping[str, Any], p: _Problems) -> TrainingConditions:
    """The optional ``training`` object: ``tile_size`` (px), ``pixel_size_m`` and ``value_range`` ([low, high])."""
    tile = p.get(raw, "tile_size", "$.training", int, required=False)
    if tile is not None and tile < 1:
        p.add("$.training.tile_size", f"must be a positive number of pixels, found {tile}")
        tile = None
    pixel = _parse_range(raw.get("pixel_size_m"), p, "$.training.pixel_size_m")
    if pixel is not None and pixel[0] <= 0:
        p.add("$.training.pixel_size_m", "expected positive sizes in metres")
        pixel = None
    return TrainingConditions(tile, pixel, _parse_range(raw.get("value_range"), p, "$.training.value_range"))


def _number_list(obj: Mapping[str, Any], key: str, path: str, n: int, p: _Problems) -> tuple[float, ...]:
    values = p.get(obj, key, path, list, default=[])
    if len(values) != n or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        p.add(f"{path}.{key}", f"expected {n} numbers (one per input band), found {values!r:.80}")
        return (0.0,) * n
    return tuple(float(v) for v in values)


def _parse_normalization(norm: Mapping[str, Any], n_bands: int, p: _Problems) -> Normalization:
    path = "$.input.normalization"
    kind = p.get(norm, "type", path, str, default="none")
    if kind not in NORMALIZATION_TYPES:
        p.add(f"{path}.type", f"expected one of {', '.join(NORMALIZATION_TYPES)}, found {kind!r}")
        return Normalization()
    if kind == "mean_std":
        mean, std = _number_list(norm, "mean", path, n_bands, p), _number_list(norm, "std", path, n_bands, p)
        if any(s <= 0 for s in std):
            p.add(f"{path}.std", "every std must be > 0")
        return Normalization("mean_std", mean, std)
    if kind == "min_max":
        lo, hi = _number_list(norm, "min", path, n_bands, p), _number_list(norm, "max", path, n_bands, p)
        if any(h <= lo_ for lo_, h in zip(lo, hi, strict=True)):
            p.add(f"{path}.max", "every max must be greater than its min")
        return Normalization("min_max", lo, tuple(h - lo_ for lo_, h in zip(lo, hi, strict=True)))
    return Normalization()


def _parse_classes(items: Sequence[Any], p: _Problems) -> tuple[ClassSpec, ...]:
    classes, seen = [], set()
    for i, item in enumerate(items):
        path = f"$.classes[{i}]"
        if not isinstance(item, dict):
            p.add(path, f"expected an object with value, name and color, found {item!r:.60}")
            continue
        value = p.get(item, "value", path, int, default=0)
        if not 0 <= value < NODATA_CLASS:
            p.add(f"{path}.value", f"must be 0–{NODATA_CLASS - 1} ({NODATA_CLASS} marks nodata), found {value}")
        if value in seen:
            p.add(f"{path}.value", f"value {value} is used by another class")
        seen.add(value)
        color = p.get(item, "color", path, str, default="#808080")
        if not _COLOR.match(color):
            p.add(f"{path}.color", f"expected #rrggbb, found {color!r}")
            color = "#808080"
        classes.append(ClassSpec(value=value, name=p.get(item, "name", path, str, default=str(value)), color=color))
    if not classes:
        p.add("$.classes", "must list at least one class")
    return tuple(classes)
