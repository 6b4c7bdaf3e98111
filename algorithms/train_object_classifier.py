"""Processing algorithm "Train object classifier": a timm image classifier trained on labelled tiles (one class per
chip), written as an image-classification package with an HTML + JSON report. The core is
:func:`training.classifier_train.train_object_classifier`; this adapter reads the parameters."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
    QgsProcessingParameterString,
)

from ..training.classifier_train import CLASSIFIERS, DEFAULT_CLASSIFIER, ClassifierTrainRequest, train_object_classifier
from .base import DEEP_LEARNING_PACKAGES, callbacks_for
from .training_parameters import ModelTrainingAlgorithm


class TrainObjectClassifierAlgorithm(ModelTrainingAlgorithm):
    search_tags = ("training", "train", "object classification", "image classification", "classifier", "timm",
                   "resnet", "deep learning", "pytorch", "model package", "labeled tiles", "tree crowns")
    summary = "Trains a timm image classifier on labelled chips (Labeled_Tiles) into a Classify objects package."
    required_packages = {**DEEP_LEARNING_PACKAGES, "timm": "timm"}
    DATA = "DATA"
    ARCH = "ARCH"
    CLASS_WEIGHTS = "CLASS_WEIGHTS"
    ACCURACY = "ACCURACY"
    BALANCED_ACCURACY = "BALANCED_ACCURACY"
    INITIAL_CHOICES = ("none (random)", "an image-classification package", "weights file (timm state dict)")

    def name(self) -> str:
        return "train_object_classifier"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Train object classifier")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Trains an image classifier on labelled chips, one class per chip (from Export object classification "
            "training data, or an Esri Labeled_Tiles export), and writes an image-classification package that "
            "Classify objects runs.\n\n"
            f"Classifier: a timm model by name (default {DEFAULT_CLASSIFIER}, small enough for a CPU; e.g. "
            f"{', '.join(CLASSIFIERS[1:5])}). Weights start at random (timm's pretrained weights are never "
            "downloaded), from an image-classification package of the same model (fine-tuning: its bands are matched "
            "with the chips' band names and its normalisation is used), or from a weights file (safetensors or a "
            "state dict of the same timm model; a pickle only when you trust the file). A classifier head of another "
            "class count starts at random; when the chips' bands differ from the weights', the first convolution "
            "is adapted as in Train segmentation model.\n"
            "Each epoch trains on the training chips (random flips and 90° rotations; the loss weighted by inverse "
            "class frequency unless unticked), then measures accuracy and balanced accuracy (the mean recall of the "
            "classes) on the validation chips; the log shows both. The best epoch by validation balanced accuracy "
            "becomes the package; training stops early after 'patience' epochs without a better one (0: never). "
            "Cancel keeps the best epoch so far and still writes the package. A checkpoint is written after every "
            "epoch in a hidden folder beside the package: a run that was killed resumes when started again with "
            "the same parameters.\n"
            "Folders without a split (Esri) get validation chips drawn at random (fraction, seed).\n"
            "Package: class table and band names of the data, normalisation from the training statistics, chip "
            "size = the chips' size. Report (HTML, JSON): accuracy, balanced accuracy, Cohen's kappa, per-class "
            "precision and recall and the confusion matrix on the validation chips, next to the majority-class "
            "baseline (always answering the most frequent training class); learning curves and metrics per epoch."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_training_parameters(
            [QgsProcessingParameterFile(self.DATA, self.tr("Labelled tiles folder"),
                                        behavior=QgsProcessingParameterFile.Folder),
             QgsProcessingParameterString(self.ARCH, self.tr("Classifier (timm model name)"),
                                          defaultValue=DEFAULT_CLASSIFIER),
             *self.initial_parameters(self.tr("Image-classification package (initial weights)"))],
            self.tr("Image-classification package"), batch_size=16, max_batch_size=4096, learning_rate=0.001,
            advanced_before=[
                QgsProcessingParameterBoolean(self.CLASS_WEIGHTS, self.tr("Weight classes by inverse frequency"),
                                              True),
                *self.initial_advanced(),
            ])
        self.addOutput(QgsProcessingOutputNumber(self.ACCURACY, self.tr("Validation accuracy of the best epoch")))
        self.addOutput(QgsProcessingOutputNumber(self.BALANCED_ACCURACY,
                                                 self.tr("Validation balanced accuracy of the best epoch")))

    def run_algorithm(self, parameters, context, feedback) -> dict:
        fields, reports = self.training_values(parameters, context)
        initial = self.initial_values(parameters, context)
        initial["initial_part"] = "network"
        request = ClassifierTrainRequest(
            data=Path(self.parameterAsFile(parameters, self.DATA, context)),
            arch=self.parameterAsString(parameters, self.ARCH, context).strip() or DEFAULT_CLASSIFIER,
            class_weighting=self.parameterAsBool(parameters, self.CLASS_WEIGHTS, context),
            inputs=tuple(self.run_inputs(parameters, context)), **initial, **fields)
        result = train_object_classifier(request, callbacks_for(feedback))
        v = result.validation
        base = v["majority_baseline"]
        feedback.pushInfo(f"Package written: {result.package} (best epoch {result.best_epoch}, validation accuracy "
                          f"{v['overall_accuracy'] or 0:.4f}, balanced accuracy {v['balanced_accuracy'] or 0:.4f}; "
                          f"always '{base['class']}': {base['accuracy'] or 0:.4f}, "
                          f"{base['balanced_accuracy'] or 0:.4f}).")
        return {self.OUTPUT: str(result.package), **reports, self.BEST_EPOCH: result.best_epoch,
                self.ACCURACY: v["overall_accuracy"] or 0.0, self.BALANCED_ACCURACY: v["balanced_accuracy"] or 0.0}
