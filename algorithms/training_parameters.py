"""What "Train segmentation model", "Train object detector" and "Train object classifier" share: the training
parameters (epochs, batch size, learning rate, schedule, patience, seed, device, validation fraction), the package
and report destinations, the package's name and licence, the initial weights (package, weights file, new bands,
trust), and the reading of them back into request fields. It defines no concrete algorithm (the base class is
abstract)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..models.sources import MODEL_FILE_FILTER
from ..training.adapt import NEW_BAND_INITS
from ..training.errors import TrainingDataError
from ..training.network import SCHEDULES
from .base import DEVICES, TrainingGroupAlgorithm


class ModelTrainingAlgorithm(TrainingGroupAlgorithm):
    """Base of the algorithms that train a network on a folder of chips into a model package with a report."""

    abstract = True
    EPOCHS = "EPOCHS"
    BATCH_SIZE = "BATCH_SIZE"
    LEARNING_RATE = "LEARNING_RATE"
    SCHEDULE = "SCHEDULE"
    PATIENCE = "PATIENCE"
    SEED = "SEED"
    DEVICE = "DEVICE"
    VALIDATION_FRACTION = "VALIDATION_FRACTION"
    NAME = "NAME"
    LICENSE = "LICENSE"
    OUTPUT = "OUTPUT"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    OUTPUT_REPORT_JSON = "OUTPUT_REPORT_JSON"
    BEST_EPOCH = "BEST_EPOCH"
    DEVICES = DEVICES
    INITIAL = "INITIAL"
    INITIAL_PACKAGE = "INITIAL_PACKAGE"
    INITIAL_WEIGHTS = "INITIAL_WEIGHTS"
    TRUST_WEIGHTS = "TRUST_WEIGHTS"
    NEW_BANDS = "NEW_BANDS"
    INITIAL_CHOICES: tuple[str, ...] = ("none (random)",)
    """Where the weights start: none, a model package (choice 1), a weights file (choices 2 and on: the whole
    network, then the encoder only)."""
    NEW_BAND_CHOICES = ("mean of the pretrained filters", "zero")
    WEIGHTS_FILTER = "Weights (*.safetensors *.pt *.pth *.ckpt *.bin);;All files (*.*)"

    def initial_parameters(self, package_label: str) -> list[QgsProcessingParameterDefinition]:
        """The initial-weights choice (:attr:`INITIAL_CHOICES`), the starting package (``package_label``) and the
        weights file."""
        return [QgsProcessingParameterEnum(self.INITIAL, self.tr("Initial weights"), options=list(self.INITIAL_CHOICES),
                                           defaultValue=0),
                QgsProcessingParameterFile(self.INITIAL_PACKAGE, package_label, optional=True,
                                           fileFilter=MODEL_FILE_FILTER),
                QgsProcessingParameterFile(self.INITIAL_WEIGHTS, self.tr("Weights file (initial weights)"),
                                           optional=True, fileFilter=self.WEIGHTS_FILTER)]

    def initial_advanced(self) -> list[QgsProcessingParameterDefinition]:
        """The advanced parameters of the initial weights: filters of new bands, trust of a pickled weights file."""
        return [QgsProcessingParameterEnum(self.NEW_BANDS, self.tr("First-layer filters of new bands"),
                                           options=list(self.NEW_BAND_CHOICES), defaultValue=0),
                QgsProcessingParameterBoolean(self.TRUST_WEIGHTS,
                                              self.tr("I trust the weights file (pickles run code)"), False)]

    def initial_values(self, parameters, context) -> dict[str, Any]:
        """The initial-weights parameters as request fields (initial_package, initial_weights, initial_part,
        trust_weights, new_bands); refused when the chosen package or file is not given."""
        package = self.parameterAsFile(parameters, self.INITIAL_PACKAGE, context)
        weights = self.parameterAsFile(parameters, self.INITIAL_WEIGHTS, context)
        initial = self.parameterAsEnum(parameters, self.INITIAL, context)
        if initial == 1 and not package:
            raise TrainingDataError("Choose the model package whose weights start the training, or set the initial "
                                    "weights to none.")
        if initial >= 2 and not weights:
            raise TrainingDataError("Choose the weights file that starts the training, or set the initial weights to "
                                    "none.")
        return {"initial_package": Path(package) if initial == 1 else None,
                "initial_weights": Path(weights) if initial >= 2 else None,
                "initial_part": "network" if initial == 2 else "encoder",
                "trust_weights": self.parameterAsBool(parameters, self.TRUST_WEIGHTS, context),
                "new_bands": NEW_BAND_INITS[self.parameterAsEnum(parameters, self.NEW_BANDS, context)]}

    def add_training_parameters(self, inputs: Sequence[QgsProcessingParameterDefinition], package_label: str, *,
                                batch_size: int, max_batch_size: int, learning_rate: float,
                                advanced_before: Sequence[QgsProcessingParameterDefinition] = (),
                                advanced_after: Sequence[QgsProcessingParameterDefinition] = ()) -> None:
        """Add, in dialog order: ``inputs``, epochs, batch size, learning rate, the package (``package_label``) and
        HTML report destinations; under "Advanced": the JSON report, ``advanced_before``, schedule, patience, seed,
        device, validation fraction, ``advanced_after``, package name and licence; then the best-epoch output."""
        number = QgsProcessingParameterNumber
        for param in inputs:
            self.addParameter(param)
        self.addParameter(number(self.EPOCHS, self.tr("Epochs"), number.Integer, 20, minValue=1, maxValue=10000))
        self.addParameter(number(self.BATCH_SIZE, self.tr("Batch size (chips)"), number.Integer, batch_size,
                                 minValue=1, maxValue=max_batch_size))
        self.addParameter(number(self.LEARNING_RATE, self.tr("Learning rate"), number.Double, learning_rate,
                                 minValue=1e-12, maxValue=10.0))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, package_label, self.tr("Deep Raster model package (*.drpk)")))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_REPORT, self.tr("Training report (HTML)"), self.tr("HTML files (*.html)")))
        self.add_advanced([
            QgsProcessingParameterFileDestination(self.OUTPUT_REPORT_JSON, self.tr("Training report (JSON)"),
                                                  self.tr("JSON files (*.json)"), optional=True),
            *advanced_before,
            QgsProcessingParameterEnum(self.SCHEDULE, self.tr("Learning-rate schedule"), options=list(SCHEDULES),
                                       defaultValue=0),
            number(self.PATIENCE, self.tr("Early stopping patience, epochs (0: off)"), number.Integer, 5, minValue=0),
            number(self.SEED, self.tr("Random seed"), number.Integer, 0, minValue=0),
            QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), options=list(self.DEVICES), defaultValue=0),
            number(self.VALIDATION_FRACTION, self.tr("Validation fraction (folders without a split)"),
                   number.Double, 0.2, minValue=0.01, maxValue=0.99),
            *advanced_after,
            QgsProcessingParameterString(self.NAME, self.tr("Package name (empty: the file name)"), optional=True),
            QgsProcessingParameterString(self.LICENSE, self.tr("Licence of the package (SPDX id)"),
                                         defaultValue="unknown", optional=True),
        ])
        self.addOutput(QgsProcessingOutputNumber(self.BEST_EPOCH, self.tr("Best epoch")))

    def training_values(self, parameters, context) -> tuple[dict[str, Any], dict[str, str | None]]:
        """The parameters of :meth:`add_training_parameters` as request fields (output with the .drpk suffix,
        report_html, report_json, epochs ... validation_fraction, name, license), and the report outputs of the
        run's result: the report paths as the destinations gave them (None: not written)."""
        output = Path(self.parameterAsFileOutput(parameters, self.OUTPUT, context))
        html_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context) or None
        json_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT_JSON, context) or None
        fields = {
            "output": output if output.suffix.lower() == ".drpk" else output.with_suffix(".drpk"),
            "report_html": Path(html_path) if html_path else None,
            "report_json": Path(json_path) if json_path else None,
            "epochs": self.parameterAsInt(parameters, self.EPOCHS, context),
            "batch_size": self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            "learning_rate": self.parameterAsDouble(parameters, self.LEARNING_RATE, context),
            "schedule": SCHEDULES[self.parameterAsEnum(parameters, self.SCHEDULE, context)],
            "patience": self.parameterAsInt(parameters, self.PATIENCE, context),
            "seed": self.parameterAsInt(parameters, self.SEED, context),
            "device": self.DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            "validation_fraction": self.parameterAsDouble(parameters, self.VALIDATION_FRACTION, context),
            "name": self.parameterAsString(parameters, self.NAME, context).strip(),
            "license": self.parameterAsString(parameters, self.LICENSE, context).strip() or "unknown",
        }
        return fields, {self.OUTPUT_REPORT: html_path, self.OUTPUT_REPORT_JSON: json_path}
