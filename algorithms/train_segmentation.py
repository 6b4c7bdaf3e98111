"""Processing algorithm "Train segmentation model": a segmentation-models-pytorch network trained (or fine-tuned from
a package's encoder) on a folder of chips, written as a model package with an HTML + JSON report. The core is
:func:`training.train.train_segmentation`; this adapter reads the parameters."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterString,
)

from ..training.network import ARCHITECTURES, LOSSES
from ..training.train import TrainRequest, train_segmentation
from .base import callbacks_for
from .training_parameters import ModelTrainingAlgorithm


class TrainSegmentationAlgorithm(ModelTrainingAlgorithm):
    search_tags = ("training", "train", "fine-tuning", "deep learning", "segmentation", "unet", "pytorch",
                   "model package", "chips", "classified tiles", "arcgis", "land cover")
    summary = "Trains a segmentation network (U-Net …) on exported chips into a model package, with a report."
    CHIPS = "CHIPS"
    ARCH = "ARCH"
    ENCODER = "ENCODER"
    LOSS = "LOSS"
    CLASS_WEIGHTS = "CLASS_WEIGHTS"
    MIOU = "MIOU"
    INITIAL_CHOICES = ("none (random)", "encoder of a model package", "weights file: whole network",
                       "weights file: encoder only")

    def name(self) -> str:
        return "train_segmentation"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Train segmentation model")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Trains a segmentation network on a folder of chips (from Export training data, or an Esri "
            "Classified_Tiles export) and writes a model package that Classify pixels runs.\n\n"
            "Network: a segmentation-models-pytorch architecture (default U-Net) with an encoder (default resnet18: "
            "fast on a CPU); weights start at random, from the encoder of a model package (fine-tuning: the "
            "package's encoder and normalisation are used, its bands matched with the chips' band names), or from a "
            "weights file (safetensors or a state dict; the whole network of the same architecture, or only its "
            "encoder; a pickle only when you trust the file). When the chips' bands differ from the weights', the "
            "first convolution is adapted: bands the weights know keep their filters, new bands start from the mean "
            "of the pretrained filters (or zero), missing bands are dropped; the log says what was done per band.\n"
            "Each epoch trains on the training chips (random flips and 90° rotations), then measures loss and mean "
            "IoU on the validation chips; the log shows both. The best epoch by validation mIoU becomes the package; "
            "training stops early after 'patience' epochs without a better mIoU (0: never). Cancel keeps the best "
            "epoch so far and still writes the package.\n"
            "A checkpoint is written after every epoch in a hidden folder beside the package: a run that was killed "
            "resumes when started again with the same parameters (on the CPU with the same final weights).\n"
            "Package: class table and band names of the chips, normalisation from the training statistics, tile size "
            "= chip size, training provenance. Report (HTML, JSON): learning curves, metrics per epoch, per-class "
            "IoU / precision / recall and the confusion matrix on the validation chips."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_training_parameters(
            [QgsProcessingParameterFile(self.CHIPS, self.tr("Training chips folder"),
                                        behavior=QgsProcessingParameterFile.Folder),
             QgsProcessingParameterEnum(self.ARCH, self.tr("Architecture"), options=list(ARCHITECTURES),
                                        defaultValue=0),
             QgsProcessingParameterString(self.ENCODER, self.tr("Encoder"), defaultValue="resnet18"),
             *self.initial_parameters(self.tr("Model package (initial encoder)")),
             QgsProcessingParameterEnum(self.LOSS, self.tr("Loss"), options=list(LOSSES), defaultValue=0)],
            self.tr("Model package"), batch_size=8, max_batch_size=4096, learning_rate=0.001,
            advanced_before=[
                QgsProcessingParameterBoolean(self.CLASS_WEIGHTS, self.tr("Weight classes by inverse frequency"),
                                              False),
                *self.initial_advanced(),
            ])
        self.addOutput(QgsProcessingOutputNumber(self.MIOU, self.tr("Validation mIoU of the best epoch (0–1)")))

    def run_algorithm(self, parameters, context, feedback) -> dict:
        fields, reports = self.training_values(parameters, context)
        request = TrainRequest(
            chips=Path(self.parameterAsFile(parameters, self.CHIPS, context)),
            arch=ARCHITECTURES[self.parameterAsEnum(parameters, self.ARCH, context)],
            encoder=self.parameterAsString(parameters, self.ENCODER, context).strip() or "resnet18",
            **self.initial_values(parameters, context),
            loss=LOSSES[self.parameterAsEnum(parameters, self.LOSS, context)],
            class_weighting=self.parameterAsBool(parameters, self.CLASS_WEIGHTS, context), **fields)
        result = train_segmentation(request, callbacks_for(feedback))
        feedback.pushInfo(f"Package written: {result.package} (best epoch {result.best_epoch}, validation mIoU "
                          f"{result.validation['miou']:.4f}).")
        return {self.OUTPUT: str(result.package), **reports, self.BEST_EPOCH: result.best_epoch,
                self.MIOU: result.validation["miou"]}
