"""Processing algorithm "Create model package": weights + description → a package anyone can run with no code."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMatrix,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtCore import NULL

from ..models.class_tables import read_class_table
from ..models.create import CREATABLE_TASKS, PackageRequest, create_package
from ..models.errors import ModelPackageError
from ..models.spec import ACTIVATIONS
from .band_parameters import band_numbers
from .base import DeepRasterAlgorithm


def parse_numbers(text: str, what: str) -> list[float] | None:
    """Comma- or space-separated numbers; None for an empty text."""
    items = [t for t in text.replace(",", " ").split() if t]
    if not items:
        return None
    try:
        return [float(t) for t in items]
    except ValueError as exc:
        raise ModelPackageError(f"{what}: expected numbers separated by commas, found {text!r}.") from exc


def parse_classes(table: list) -> list[dict]:
    """Rows of (value, name, colour) from a Processing matrix (a flat list, 3 cells per row)."""
    if not table or len(table) % 3:
        raise ModelPackageError("Classes: give rows of value, name and colour (#rrggbb), e.g. 0, clear, #3a9d23, or a "
                                "class file (CSV, QGIS colour map export or .qml).")
    classes = []
    for i in range(0, len(table), 3):
        value, name, color = (str(c).strip() for c in table[i:i + 3])
        try:
            classes.append({"value": int(float(value)), "name": name, "color": color})
        except ValueError as exc:
            raise ModelPackageError(f"Classes row {i // 3 + 1}: value {value!r} is not a whole number."
                                    " Give each class a whole-number value (e.g. 0, 1, 2).") from exc
    return classes


class CreatePackageAlgorithm(DeepRasterAlgorithm):
    search_tags = ("model package", "drpk", "weights", "pytorch", "safetensors", "deep learning", "export",
                   "segmentation", "classification", "object detection", "timm", "torchvision")
    summary = ("Turns trained PyTorch weights into a model package (.drpk) for Classify pixels, Classify objects or "
               "Detect objects.")
    folder_outputs = ("OUTPUT",)  # a package folder, or a .drpk file
    WEIGHTS = "WEIGHTS"
    TASK = "TASK"
    TRUST = "TRUST"
    FRAMEWORK = "FRAMEWORK"
    ARCH = "ARCH"
    ENCODER = "ENCODER"
    BANDS = "BANDS"
    CLASSES = "CLASSES"
    CLASSES_FILE = "CLASSES_FILE"
    ACTIVATION = "ACTIVATION"
    VALUE_SCALE = "VALUE_SCALE"
    VALUE_OFFSET = "VALUE_OFFSET"
    NORMALIZATION = "NORMALIZATION"
    NORM_RASTER = "NORM_RASTER"
    NORM_BANDS = "NORM_BANDS"
    MEAN = "MEAN"
    STD = "STD"
    SAMPLE_SIZE = "SAMPLE_SIZE"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    INPUT_SCALE = "INPUT_SCALE"
    NAME = "NAME"
    VERSION = "VERSION"
    DESCRIPTION = "DESCRIPTION"
    AUTHORS = "AUTHORS"
    LICENSE = "LICENSE"
    ATTRIBUTION = "ATTRIBUTION"
    KEEP_PICKLE = "KEEP_PICKLE"
    OUTPUT = "OUTPUT"

    FRAMEWORKS = ("detect (pickled smp model or TorchScript)", "smp", "timm", "torchvision")
    NORMALIZATION_CHOICES = ("none", "compute mean/std from a sample raster", "given mean and std")

    def name(self) -> str:
        return "create_package"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Create model package")

    def group(self) -> str:
        return self.tr("Model packages")

    def groupId(self) -> str:  # noqa: N802 (QGIS API)
        return "model_packages"

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Turns trained weights into a Deep Raster model package (.drpk): the weights plus a description of the "
            "input bands, value scale, normalisation, classes with colours, tile size and licence, so anyone can run "
            "the model under the conditions it was trained for, with no code.\n\n"
            "Task: pixel_classification (a segmentation network, for \"Classify pixels\"), image_classification (a "
            "timm classifier applied to a chip around each feature, for \"Classify objects\"; the tile size is the "
            "chip size) or object_detection (a torchvision detector such as fasterrcnn_resnet50_fpn, retinanet, fcos "
            "or ssdlite, for \"Detect objects\").\n"
            "Weights: safetensors, a plain PyTorch state dict (.pt/.pth: then give the framework and architecture, "
            "e.g. smp / Unet with encoder resnet34, timm / resnet18, torchvision / fasterrcnn_resnet50_fpn), "
            "TorchScript, or a whole pickled model (torch.save(model)). A pickle can run code when opened: it is read "
            "only when you tick 'I trust this file'; its weights are then converted to safetensors (a segmentation "
            "model's or timm classifier's architecture is detected).\n"
            "Settings of another task: a framework, an encoder or a detector input scale that does not fit the task "
            "is refused with a message; the overlap (classifiers), the activation (detectors) and keeping a pickle "
            "(classifiers and detectors) are not used by those tasks and are ignored, with a note in the log.\n"
            "Normalisation: per-band mean and std in model units (raster value × scale + offset), given or computed "
            "from a bounded random sample of a raster's valid pixels.\n"
            "Classes: one row per class (value 0–254, name, colour #rrggbb), in the order of the model's output "
            "channels; a binary model with one sigmoid output lists two classes; a detector's classes are the labels "
            "it reports. Or a file: a CSV of value, name, colour; a QGIS colour map export (.txt); or the .qml style "
            "of a class raster.\n"
            "The network is built, loaded strictly (weights that do not fit are refused, naming what to change) and "
            "run once before anything is written."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        # essentials: the weights, what goes in and comes out, the name and licence; the rest is advanced
        string = QgsProcessingParameterString
        number = QgsProcessingParameterNumber
        self.addParameter(QgsProcessingParameterFile(self.WEIGHTS, self.tr("Weights file"),
                                                     fileFilter="Weights (*.safetensors *.pt *.pth *.ckpt);;All (*)"))
        self.addParameter(QgsProcessingParameterEnum(self.TASK, self.tr("Task"),
                                                     options=list(CREATABLE_TASKS), defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(self.FRAMEWORK, self.tr("Framework"),
                                                     options=list(self.FRAMEWORKS), defaultValue=0))
        self.addParameter(string(self.ARCH, self.tr("Architecture (e.g. Unet, resnet18)"), optional=True))
        self.addParameter(string(self.ENCODER, self.tr("Encoder (segmentation, e.g. resnet34)"), optional=True))
        self.addParameter(string(self.BANDS, self.tr("Bands in model order (e.g. B04,B03,B02)")))
        self.addParameter(QgsProcessingParameterMatrix(self.CLASSES, self.tr("Classes (value, name, #rrggbb)"),
                                                       numberRows=2, hasFixedNumberRows=False,
                                                       headers=["value", "name", "color"], optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.CLASSES_FILE, self.tr("or classes from a file (CSV, colour map, .qml)"), optional=True,
            fileFilter="Class tables (*.csv *.txt *.qml);;All (*)"))
        self.addParameter(number(self.VALUE_SCALE, self.tr("Value scale (raster × scale + offset)"),
                                 number.Double, 1.0))
        self.addParameter(string(self.NAME, self.tr("Package name")))
        self.addParameter(string(self.LICENSE, self.tr("Licence (SPDX id, e.g. CC-BY-4.0)")))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, self.tr("Model package"),
                                                                fileFilter="Deep Raster model package (*.drpk)"))
        advanced = [
            QgsProcessingParameterBoolean(self.TRUST, self.tr("I trust this file (pickles can run code)"), False),
            QgsProcessingParameterEnum(self.ACTIVATION, self.tr("Output activation"), options=list(ACTIVATIONS),
                                       defaultValue=0),
            number(self.VALUE_OFFSET, self.tr("Value offset"), number.Double, 0.0),
            QgsProcessingParameterEnum(self.NORMALIZATION, self.tr("Normalisation"),
                                       options=list(self.NORMALIZATION_CHOICES), defaultValue=0),
            QgsProcessingParameterRasterLayer(self.NORM_RASTER, self.tr("Sample raster (normalisation)"),
                                              optional=True),
            QgsProcessingParameterBand(self.NORM_BANDS, self.tr("Sample raster bands, model order"),
                                       parentLayerParameterName=self.NORM_RASTER, optional=True, allowMultiple=True),
            string(self.MEAN, self.tr("Mean per band (given)"), optional=True),
            string(self.STD, self.tr("Std per band (given)"), optional=True),
            number(self.SAMPLE_SIZE, self.tr("Normalisation sample size (pixels)"), number.Integer, 100_000,
                   minValue=100),
            number(self.TILE_SIZE, self.tr("Tile / chip size the model was trained on (px)"),
                   number.Integer, 256, minValue=16),
            number(self.OVERLAP, self.tr("Recommended overlap (px)"), number.Integer, 64, minValue=0),
            number(self.INPUT_SCALE, self.tr("Detector input scale (torchvision)"), number.Double, 1.0,
                   minValue=0.01, maxValue=8.0),
            *(string(name, self.tr(label), optional=True) for name, label in (
                (self.VERSION, "Version (empty: 1.0.0)"), (self.DESCRIPTION, "Description"),
                (self.AUTHORS, "Authors (comma-separated)"), (self.ATTRIBUTION, "Data attribution"))),
            QgsProcessingParameterBoolean(self.KEEP_PICKLE, self.tr("Keep a pickled model as it is (not recommended)"),
                                          False),
        ]
        for param in advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)

    def classes(self, parameters, context) -> list[dict]:
        """The class table from the matrix or from the class file (exactly one of them)."""
        table = [cell for cell in self.parameterAsMatrix(parameters, self.CLASSES, context)
                 if not (cell is None or cell == NULL or str(cell).strip() == "")]  # an unset matrix gives [NULL]
        path = self.parameterAsFile(parameters, self.CLASSES_FILE, context)
        if path and table:
            raise ModelPackageError("Classes are given twice, in the table and in a file: empty one of them.")
        return read_class_table(path) if path else parse_classes(table)

    def run_algorithm(self, parameters, context, feedback) -> dict:
        string = lambda key: self.parameterAsString(parameters, key, context).strip()  # noqa: E731
        framework = self.parameterAsEnum(parameters, self.FRAMEWORK, context)
        normalization = self.parameterAsEnum(parameters, self.NORMALIZATION, context)
        norm_layer = self.parameterAsRasterLayer(parameters, self.NORM_RASTER, context)
        if normalization == 1 and norm_layer is None:
            raise ModelPackageError("Choose the sample raster to compute the normalisation from.")
        given = normalization == 2
        output = Path(self.parameterAsFileOutput(parameters, self.OUTPUT, context))
        request = PackageRequest(
            weights=Path(self.parameterAsFile(parameters, self.WEIGHTS, context)),
            output=output if output.suffix.lower() == ".drpk" else output.with_suffix(".drpk"),
            name=string(self.NAME), license=string(self.LICENSE), version=string(self.VERSION) or "1.0.0",
            description=string(self.DESCRIPTION), attribution=string(self.ATTRIBUTION),
            authors=[a.strip() for a in string(self.AUTHORS).split(",") if a.strip()],
            bands=[b.strip() for b in string(self.BANDS).split(",") if b.strip()],
            classes=self.classes(parameters, context),
            task=CREATABLE_TASKS[self.parameterAsEnum(parameters, self.TASK, context)],
            framework=(None, "smp", "timm", "torchvision")[framework], arch=string(self.ARCH) or None,
            encoder=string(self.ENCODER) or None,
            activation=ACTIVATIONS[self.parameterAsEnum(parameters, self.ACTIVATION, context)],
            value_scale=self.parameterAsDouble(parameters, self.VALUE_SCALE, context),
            value_offset=self.parameterAsDouble(parameters, self.VALUE_OFFSET, context),
            mean=parse_numbers(string(self.MEAN), "Mean") if given else None,
            std=parse_numbers(string(self.STD), "Std") if given else None,
            normalization_raster=Path(norm_layer.source()) if normalization == 1 else None,
            normalization_bands=band_numbers(self, parameters, self.NORM_BANDS, context) if normalization == 1
            else (),
            sample_size=self.parameterAsInt(parameters, self.SAMPLE_SIZE, context),
            tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context),
            overlap=self.parameterAsInt(parameters, self.OVERLAP, context),
            input_scale=self.parameterAsDouble(parameters, self.INPUT_SCALE, context),
            trusted=self.parameterAsBool(parameters, self.TRUST, context),
            keep_pickle=self.parameterAsBool(parameters, self.KEEP_PICKLE, context),
        )
        if given and (request.mean is None or request.std is None):
            raise ModelPackageError("Give the mean and the std of every band (comma-separated), or choose another "
                                    "normalisation.")
        path = create_package(request, info=lambda note: feedback.pushInfo(f"Note: {note}"))
        feedback.pushInfo(f"Package written: {path}")
        return {self.OUTPUT: str(path)}
