"""The Deep Raster model package: a folder with ``model.json`` beside the weights (see docs/model-package.md).

``load_package`` reads and validates a description into a frozen :class:`ModelPackage`; every problem found is
reported at once, each with its JSON path. ``save_package`` writes weights (safetensors) and a description.
No torch import at module level: reading a description must work where torch is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelPackageError

FORMAT_NAME = "deepraster-model-package"
FORMAT_VERSION = "1.0"
DESCRIPTION_FILE = "model.json"
ARCHIVE_SUFFIX = ".drpk"
TASKS = ("pixel_classification", "feature_extraction")
RESERVED_TASKS = ("object_detection", "regression")
ACTIVATIONS = ("softmax", "sigmoid", "none")
NORMALIZATIONS = ("mean_std", "min_max", "none")
FRAMEWORKS = ("smp", "timm", "torchscript")
WEIGHT_FORMATS = ("safetensors", "state_dict", "torchscript", "pickled_module")
NODATA_CLASS = 255
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class BandSpec:
    """One model input band: its name, other names it may carry in a raster, optional centre wavelength (nm)."""

    name: str
    aliases: tuple[str, ...] = ()
    wavelength_nm: float | None = None
    default_band: int | None = None  # 1-based raster band number used when names do not match

    def matches(self, description: str) -> bool:
        """True when a raster band description names this band (case-insensitive, surrounding spaces ignored)."""
        wanted = description.strip().lower()
        return bool(wanted) and wanted in {n.lower() for n in (self.name, *self.aliases)}


@dataclass(frozen=True)
class ClassSpec:
    """One output class: the value written in the class raster, its name and its colour ``#rrggbb``."""

    value: int
    name: str
    color: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        """The colour as 0–255 integers."""
        return int(self.color[1:3], 16), int(self.color[3:5], 16), int(self.color[5:7], 16)


@dataclass(frozen=True)
class Normalization:
    """Per-band normalisation in model units: ``mean_std`` → (x − mean) / std, ``min_max`` → (x − min)/(max − min)."""

    kind: str = "none"
    a: tuple[float, ...] = ()  # mean (mean_std) or min (min_max)
    b: tuple[float, ...] = ()  # std (mean_std) or max − min (min_max)

    def shift_and_divisor(self, n_bands: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per band ``(shift, divisor)`` such that normalised = (x − shift) / divisor."""
        if self.kind == "none":
            return (0.0,) * n_bands, (1.0,) * n_bands
        return self.a, self.b


@dataclass(frozen=True)
class Architecture:
    """How to build the network.

    ``smp``: ``arch`` is a segmentation-models-pytorch architecture, ``encoder`` its encoder; ``timm``: ``arch`` is a
    timm model name; ``torchscript``: the weights file is the whole scripted model. ``kwargs`` go to the constructor.
    """

    framework: str
    arch: str
    encoder: str
    in_channels: int
    out_channels: int
    kwargs: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ModelPackage:
    """A validated model package. Paths are absolute."""

    folder: Path
    name: str
    version: str
    description: str
    task: str
    architecture: Architecture
    weights_file: Path
    weights_format: str
    weights_sha256: str | None
    bands: tuple[BandSpec, ...]
    value_scale: float
    value_offset: float
    expected_range: tuple[float, float] | None
    normalization: Normalization
    tile_size: int
    overlap: int
    size_divisor: int
    activation: str
    classes: tuple[ClassSpec, ...]
    license: str
    attribution: str
    output_stride: int = 1
    authors: tuple[str, ...] = ()
    resolution_m: Mapping[str, float] = field(default_factory=dict, compare=False)
    provenance: Mapping[str, Any] = field(default_factory=dict, compare=False)
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def band_names(self) -> list[str]:
        """Input band names in model order."""
        return [b.name for b in self.bands]

    @property
    def is_binary_sigmoid(self) -> bool:
        """One output channel read as the probability of the second class."""
        return self.architecture.out_channels == 1 and self.activation == "sigmoid"


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


def resolve_description_file(path: str | os.PathLike[str]) -> Path:
    """The ``model.json`` of a package given as its folder or as the JSON file itself."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / DESCRIPTION_FILE
    if not p.is_file():
        raise ModelPackageError(
            f"No model package at {path}: expected a package folder containing {DESCRIPTION_FILE}, "
            f"or the {DESCRIPTION_FILE} file itself."
        )
    return p.resolve()


def load_package(path: str | os.PathLike[str], verify_checksum: bool = True) -> ModelPackage:
    """Read, validate and return the package at ``path`` (folder or ``model.json``)."""
    json_file = resolve_description_file(path)
    try:
        raw = json.loads(json_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelPackageError(f"{json_file} is not valid JSON ({exc}). Fix the file or re-create the package.") \
            from exc
    if not isinstance(raw, dict):
        raise ModelPackageError(f"{json_file} must hold a JSON object, found {type(raw).__name__}.")
    package = parse_description(raw, json_file.parent)
    if verify_checksum:
        verify_weights(package)
    return package


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
    activation = p.get(inf, "activation", "$.inference", str, required=task == "pixel_classification",
                       default="none")
    if activation not in ACTIVATIONS:
        p.add("$.inference.activation", f"expected one of {', '.join(ACTIVATIONS)}, found {activation!r}")
    if size_divisor < 1:
        p.add("$.inference.size_divisor", "must be at least 1")
    elif tile_size < 1 or tile_size % size_divisor:
        p.add("$.inference.tile_size", f"must be a positive multiple of size_divisor {size_divisor}, found {tile_size}")
    if not 0 <= overlap < tile_size:
        p.add("$.inference.overlap", f"must be between 0 and tile_size − 1, found {overlap}")

    classes: tuple[ClassSpec, ...] = ()
    if task == "pixel_classification":
        classes = _parse_classes(p.get(raw, "classes", "$", list, default=[]), p)
    expected_classes = 2 if (architecture.out_channels == 1 and activation == "sigmoid") else architecture.out_channels
    if classes and expected_classes and len(classes) != expected_classes:
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
        authors=tuple(_string_list(raw, "authors", "$", p)),
        resolution_m=resolution,
        provenance=p.get(raw, "provenance", "$", dict, required=False, default={}),
        raw=raw,
    )
    p.raise_if_any(folder / DESCRIPTION_FILE)
    return package


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
    needs_arch = framework in ("smp", "timm")
    architecture = Architecture(
        framework=framework,
        arch=p.get(arch_raw, "arch", path, str, required=needs_arch, default=""),
        encoder=p.get(arch_raw, "encoder", path, str, required=framework == "smp", default=""),
        in_channels=p.get(arch_raw, "in_channels", path, int, default=0),
        out_channels=p.get(arch_raw, "out_channels", path, int, default=0),
        kwargs=p.get(arch_raw, "kwargs", path, dict, required=False, default={}),
    )
    for key in ("in_channels", "out_channels"):
        value = arch_raw.get(key, 1)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            p.add(f"{path}.{key}", "must be at least 1")
    return architecture


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


def _parse_range(rng: Any, p: _Problems) -> tuple[float, float] | None:
    if rng is None:
        return None
    if len(rng) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng) \
            or rng[0] >= rng[1]:
        p.add("$.input.expected_range", f"expected [low, high] with low < high, found {rng!r:.60}")
        return None
    return float(rng[0]), float(rng[1])


def _number_list(obj: Mapping[str, Any], key: str, path: str, n: int, p: _Problems) -> tuple[float, ...]:
    values = p.get(obj, key, path, list, default=[])
    if len(values) != n or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        p.add(f"{path}.{key}", f"expected {n} numbers (one per input band), found {values!r:.80}")
        return (0.0,) * n
    return tuple(float(v) for v in values)


def _parse_normalization(norm: Mapping[str, Any], n_bands: int, p: _Problems) -> Normalization:
    path = "$.input.normalization"
    kind = p.get(norm, "type", path, str, default="none")
    if kind not in NORMALIZATIONS:
        p.add(f"{path}.type", f"expected one of {', '.join(NORMALIZATIONS)}, found {kind!r}")
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


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(package: ModelPackage) -> None:
    """Raise when the weights file is missing or its checksum differs from the description."""
    if not package.weights_file.is_file():
        raise ModelPackageError(
            f"The weights file {package.weights_file} named by package {package.name!r} is missing. "
            "Copy the complete package folder, or re-create the package."
        )
    if package.weights_sha256 and sha256_of(package.weights_file) != package.weights_sha256.lower():
        raise ModelPackageError(
            f"The weights file {package.weights_file} does not match the checksum in {DESCRIPTION_FILE} "
            "(corrupt or replaced). Download or copy the package again."
        )


def save_package(folder: Path, description: dict[str, Any], state_dict: Mapping[str, Any]) -> Path:
    """Write ``weights.safetensors`` and ``model.json`` (with the weights checksum) into ``folder``.

    The description is validated before anything is written; files are written under temporary names and renamed.
    """
    from safetensors.torch import save_file  # local import: torch is only needed when writing weights

    folder = Path(folder)
    description = dict(description)
    description.setdefault("format", FORMAT_NAME)
    description.setdefault("format_version", FORMAT_VERSION)
    description["weights"] = {"file": "weights.safetensors", "format": "safetensors", "sha256": ""}
    parse_description({**description, "weights": {"file": "weights.safetensors"}}, folder)  # fail before writing
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    weights = folder / "weights.safetensors"
    tmp = _temp_path(weights)
    try:
        save_file(tensors, str(tmp), metadata={"format": FORMAT_NAME})
        description["weights"]["sha256"] = sha256_of(tmp)
        os.replace(tmp, weights)
    finally:
        tmp.unlink(missing_ok=True)
    write_json_atomic(folder / DESCRIPTION_FILE, description)
    return folder


def _temp_path(target: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    os.chmod(name, 0o644)  # mkstemp creates 0600; packages are meant to be shared
    return Path(name)


def write_json_atomic(target: Path, data: Mapping[str, Any]) -> None:
    """Write JSON to a temporary file beside ``target`` and rename it into place."""
    tmp = _temp_path(target)
    try:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
