"""What a Deep Raster model package describes (see docs/model-package.md): its format constants and the frozen
value objects a validated description becomes (:class:`ModelPackage` and its parts). Reading and validating a
description is :mod:`deepraster.models.description`; loading, verifying and saving a package folder is
:mod:`deepraster.models.package`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT_NAME = "deepraster-model-package"
FORMAT_VERSION = "1.0"
DESCRIPTION_FILE = "model.json"
ARCHIVE_SUFFIX = ".drpk"
TASKS = ("pixel_classification", "feature_extraction", "object_detection", "image_classification")
RESERVED_TASKS = ("regression",)
TASK_TOOLS = {"pixel_classification": "Classify pixels", "feature_extraction": "Extract deep features",
              "object_detection": "Detect objects", "image_classification": "Classify objects"}
"""The tool that applies a package of each task (named in the message when a package meets the wrong tool)."""
DETECTION_FRAMEWORKS = ("torchscript", "torchvision")
"""Frameworks of a detection package: a TorchScript detector, or a torchvision detector built by name."""
TORCHVISION_DETECTORS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
                         "fasterrcnn_mobilenet_v3_large_320_fpn", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2",
                         "fcos_resnet50_fpn", "ssdlite320_mobilenet_v3_large")
"""The ``torchvision.models.detection`` builders a detection package may name (:mod:`models.torchvision_detectors`)."""
TORCHVISION_RESERVED_KWARGS = ("weights", "weights_backbone", "num_classes", "progress")
"""Constructor arguments of a torchvision detector that Deep Raster sets itself (no downloads; classes from the
package), so ``architecture.kwargs`` may not hold them."""
CLASSIFIER_FRAMEWORKS = ("timm", "torchscript")
"""Frameworks of an image-classification package: a timm model built by name, or a TorchScript classifier."""
ACTIVATIONS = ("softmax", "sigmoid", "none")
NORMALIZATION_TYPES = ("mean_std", "min_max", "none")
FRAMEWORKS = ("smp", "timm", "torchscript", "torchvision")
WEIGHT_FORMATS = ("safetensors", "state_dict", "torchscript", "pickled_module")
NODATA_CLASS = 255


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
    timm model name; ``torchvision``: ``arch`` is a torchvision detector (:data:`TORCHVISION_DETECTORS`);
    ``torchscript``: the weights file is the whole scripted model. ``kwargs`` go to the constructor.
    ``input_scale`` (torchvision detectors only): the factor by which the detector resizes each tile inside, as it
    did in training (ArcGIS's Faster R-CNN: 1.5); boxes still come back in tile pixels.
    """

    framework: str
    arch: str
    encoder: str
    in_channels: int
    out_channels: int
    kwargs: Mapping[str, Any] = field(default_factory=dict, compare=False)
    input_scale: float = 1.0


@dataclass(frozen=True)
class TrainingConditions:
    """The conditions a model was trained under (``training`` in model.json, optional): square tile size (px),
    pixel size range ``(min, max)`` in metres, and the range of the model-unit input values. ``None``: not declared.
    A package's inference defaults stay inside them; a run outside them goes ahead with a warning."""

    tile_size: int | None = None
    pixel_size_m: tuple[float, float] | None = None
    value_range: tuple[float, float] | None = None


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
    edge_margin: int = 0
    authors: tuple[str, ...] = ()
    resolution_m: Mapping[str, float] = field(default_factory=dict, compare=False)
    training: TrainingConditions = field(default_factory=TrainingConditions)
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
