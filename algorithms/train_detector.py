"""Processing algorithm "Train object detector": a torchvision detector trained from random weights on object
training data, written as a detection package with an HTML + JSON report. The core is
:func:`training.detection_train.train_detector`; this adapter reads the parameters."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
)

from ..models.spec import TORCHVISION_DETECTORS
from ..training.detection_train import DEFAULT_DETECTOR, DetectorTrainRequest, train_detector
from .base import callbacks_for
from .training_parameters import ModelTrainingAlgorithm


class TrainDetectorAlgorithm(ModelTrainingAlgorithm):
    search_tags = ("training", "train", "object detection", "detector", "faster r-cnn", "retinanet", "fcos",
                   "ssdlite", "torchvision", "deep learning", "pytorch", "model package", "boxes", "pascal voc")
    summary = "Trains a torchvision object detector (Faster R-CNN …) on exported chips with boxes into a package."
    DATA = "DATA"
    ARCH = "ARCH"
    TILE_SIZE = "TILE_SIZE"
    MIN_VISIBLE = "MIN_VISIBLE"
    MAX_DETECTIONS = "MAX_DETECTIONS"
    MAP_50 = "MAP_50"
    MAP_50_95 = "MAP_50_95"

    def name(self) -> str:
        return "train_detector"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Train object detector")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Trains an object detector on image chips with boxes (from Export object training data, an Esri "
            "PASCAL_VOC_rectangles export, or any PASCAL VOC folder) and writes a detection package that Detect "
            "objects runs.\n\n"
            "Detector: a torchvision architecture (default Faster R-CNN with a MobileNetV3 backbone: the one small "
            "enough for a CPU), trained from random weights: torchvision's pretrained weights are never downloaded, "
            "so expect to need many more epochs (or a GPU) than a fine-tuned detector would.\n"
            "Each epoch trains on the training chips (random flips and 90° rotations of image and boxes), then "
            "detects on the validation chips and scores them: mAP@0.5 and mAP@[.5:.95] (COCO's definition); the log "
            "shows both. The best epoch by validation mAP@0.5 becomes the package; training stops early after "
            "'patience' epochs without a better mAP@0.5 (0: never). Cancel keeps the best epoch so far and still "
            "writes the package. A checkpoint is written after every epoch in a hidden folder beside the package: "
            "a run that was killed resumes when started again with the same parameters.\n"
            "Folders without a split (Esri, VOC) get validation samples drawn at random (fraction, seed); images "
            "larger than the tile size are cut into tiles, keeping boxes mostly inside (minimum visible fraction).\n"
            "Package: class table and band names of the data, normalisation from the training statistics, tile size "
            "= chip size, overlap = the largest training box (a quarter to half a tile). Report (HTML, JSON): "
            "learning curves, metrics per epoch, AP per class and the precision–recall curve on the validation chips."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        number = QgsProcessingParameterNumber
        self.add_training_parameters(
            [QgsProcessingParameterFile(self.DATA, self.tr("Object training data folder"),
                                        behavior=QgsProcessingParameterFile.Folder),
             QgsProcessingParameterEnum(self.ARCH, self.tr("Detector"), options=list(TORCHVISION_DETECTORS),
                                        defaultValue=TORCHVISION_DETECTORS.index(DEFAULT_DETECTOR))],
            self.tr("Detection package"), batch_size=4, max_batch_size=1024, learning_rate=0.0003,
            advanced_after=[
                number(self.TILE_SIZE, self.tr("Tile size, px (0: the chips' size)"), number.Integer, 0, minValue=0,
                       maxValue=4096),
                number(self.MIN_VISIBLE, self.tr("Minimum visible fraction of a box cut by a tile"), number.Double,
                       0.5, minValue=0.01, maxValue=1.0),
                number(self.MAX_DETECTIONS, self.tr("Maximum detections per tile"), number.Integer, 300, minValue=1,
                       maxValue=100000),
            ])
        self.addOutput(QgsProcessingOutputNumber(self.MAP_50, self.tr("Validation mAP@0.5 of the best epoch")))
        self.addOutput(QgsProcessingOutputNumber(self.MAP_50_95, self.tr("Validation mAP@[.5:.95] of the best "
                                                                         "epoch")))

    def run_algorithm(self, parameters, context, feedback) -> dict:
        fields, reports = self.training_values(parameters, context)
        request = DetectorTrainRequest(
            data=Path(self.parameterAsFile(parameters, self.DATA, context)),
            arch=TORCHVISION_DETECTORS[self.parameterAsEnum(parameters, self.ARCH, context)],
            tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context) or None,
            min_visible=self.parameterAsDouble(parameters, self.MIN_VISIBLE, context),
            max_detections=self.parameterAsInt(parameters, self.MAX_DETECTIONS, context),
            inputs=tuple(self.run_inputs(parameters, context)), **fields)
        result = train_detector(request, callbacks_for(feedback))
        v = result.validation
        feedback.pushInfo(f"Package written: {result.package} (best epoch {result.best_epoch}, validation mAP@0.5 "
                          f"{v['map_50'] or 0:.4f}, mAP@[.5:.95] {v['map_50_95'] or 0:.4f}).")
        return {self.OUTPUT: str(result.package), **reports, self.BEST_EPOCH: result.best_epoch,
                self.MAP_50: v["map_50"] or 0.0, self.MAP_50_95: v["map_50_95"] or 0.0}
