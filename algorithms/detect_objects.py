"""Processing algorithm "Detect objects": a detection model package applied to a raster of any size, its boxes
merged exactly across tiles into a GeoPackage of polygons. The core is :func:`objects.detection.detect_objects`."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from ..models.sources import open_model
from ..tiling.outputs import ClassInfo
from .analysis_common import mask_polygons
from .base import callbacks_for
from .execution import backend_value, execution_parameters
from .objects_common import ObjectModelAlgorithm
from .package_default_widgets import show_package_defaults
from .styling import BoxStyle, output_name, style_on_load


class DetectObjectsAlgorithm(ObjectModelAlgorithm):
    search_tags = ("object detection", "detection", "bounding boxes", "boxes", "trees", "buildings", "vehicles",
                   "deep learning", "pytorch", "torchscript", "model package", "inference", "nms")
    summary = "Finds objects in a raster with a detection model package: boxes with class and confidence as polygons."
    CONFIDENCE = "CONFIDENCE"
    IOU = "IOU"
    IOS = "IOS"
    CLASS_AGNOSTIC = "CLASS_AGNOSTIC"
    MAX_DETECTIONS = "MAX_DETECTIONS"
    MAX_TOTAL = "MAX_TOTAL"
    MASK = "MASK"

    def name(self) -> str:
        return "detect_objects"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Detect objects")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Finds objects (trees, buildings, vehicles, boats ...) in a raster of any size with a detection model "
            "package (task object_detection: a TorchScript or torchvision detector and its class table, e.g. from "
            "Train object detector) and writes their boxes as "
            "polygons in the raster's CRS to a GeoPackage, with class value, class name and confidence, styled "
            "with the package's class colours.\n\n"
            "The raster is read in overlapping tiles. A box is kept only by the tile whose core (the tile less half "
            "the overlap on each side it shares) holds its centre, then boxes of the same class that overlap by more "
            "than the NMS IoU threshold are merged, only among tiles that overlap: no duplicates where tiles meet, "
            "no object lost on a tile edge when objects are smaller than the overlap. Finished rows of tiles are "
            "written at once, so memory does not grow with the raster.\n\n"
            "Confidence threshold: boxes scoring below it are dropped (0–1). Class-agnostic: overlapping boxes of "
            "different classes are merged too. Tiles without a valid pixel are skipped. Mask polygons (optional, any "
            "CRS): objects are looked for only inside them: tiles wholly outside are not predicted, and a box is kept "
            "only when its centre lies inside a polygon.\n"
            "Advanced: tile size and overlap default to the package's (the overlap should exceed the largest "
            "object); maximum detections per tile, and in all (the most confident of the whole raster); device "
            "'auto' uses a CUDA GPU when PyTorch sees one."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Input raster")))
        self.addParameter(self.model_parameter())
        self.addParameter(QgsProcessingParameterExtent(
            self.EXTENT, self.tr("Extent (empty: whole raster)"), optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.MASK, self.tr("Mask polygons (objects only inside)"), [QgsProcessing.TypeVectorPolygon],
            optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.CONFIDENCE, self.tr("Confidence threshold (0–1)"), QgsProcessingParameterNumber.Double, 0.5,
            minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.IOU, self.tr("NMS IoU threshold (0–1)"), QgsProcessingParameterNumber.Double, 0.5,
            minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterBoolean(
            self.CLASS_AGNOSTIC, self.tr("Merge overlapping boxes of different classes"), False))
        self.addParameter(self.vector_output(self.tr("Detected objects")))
        self.add_advanced([
            self.model_bands_parameter(),
            QgsProcessingParameterNumber(self.IOS, self.tr("Intersection over smaller box threshold (0–1, 0: off)"),
                                         QgsProcessingParameterNumber.Double, 0.0, minValue=0.0, maxValue=1.0),
            QgsProcessingParameterNumber(self.MAX_DETECTIONS, self.tr("Maximum detections per tile"),
                                         QgsProcessingParameterNumber.Integer, 300, minValue=1, maxValue=100000),
            QgsProcessingParameterNumber(self.MAX_TOTAL, self.tr("Maximum detections in all (0: no limit)"),
                                         QgsProcessingParameterNumber.Integer, 0, minValue=0),
            *show_package_defaults([*self.tiling_parameters("the package's", "the package's"),
                                    self.value_scale_parameter()]),
            *execution_parameters(self.tr),
        ])

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS API)
        """Thresholds outside 0–1 are refused in words that name the parameter and the range."""
        for name in (self.CONFIDENCE, self.IOU, self.IOS):
            try:
                value = float(parameters.get(name))
            except (TypeError, ValueError):
                continue
            if not 0 <= value <= 1:
                label = self.parameterDefinition(name).description()
                return False, self.tr(f"{label}: {value:g} is outside 0–1. Give a number from 0 to 1 (e.g. 0.5).")
        return super().checkParameterValues(parameters, context)

    def run_algorithm(self, parameters, context, feedback) -> dict:
        from ..objects.detection import DetectRequest, detect_objects

        package = open_model(self.parameterAsFile(parameters, self.MODEL, context))
        layer, source, region = self.input_source(parameters, context)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        request = DetectRequest(
            raster=source.path, package=package, output=output, region=region,
            **self.model_input_values(parameters, context),
            confidence=self.parameterAsDouble(parameters, self.CONFIDENCE, context),
            iou=self.parameterAsDouble(parameters, self.IOU, context),
            ios=self.parameterAsDouble(parameters, self.IOS, context) or None,
            class_agnostic=self.parameterAsBool(parameters, self.CLASS_AGNOSTIC, context),
            max_detections=self.parameterAsInt(parameters, self.MAX_DETECTIONS, context),
            max_total=self.parameterAsInt(parameters, self.MAX_TOTAL, context) or None,
            **self.tiling_values(parameters, context),
            mask=mask_polygons(self, parameters, context, layer.crs()),
        )
        backend = backend_value(self, parameters, context)
        if backend.distributed:
            from ..scale.objects import detect_on_cluster

            stats = detect_on_cluster(request, backend, callbacks_for(feedback))
        else:
            stats = detect_objects(request, callbacks_for(feedback))
        why = "no valid pixel" + (" or outside the mask" if request.mask else "")
        feedback.pushInfo(f"{stats.boxes} objects written; {stats.tiles_predicted} tiles predicted, "
                          f"{stats.tiles_skipped} skipped ({why}); {stats.seconds:.1f} s.")
        classes = [ClassInfo(c.value, c.name, c.rgb) for c in package.classes]
        style_on_load(context, output, BoxStyle(classes), output_name(layer, f"{package.name} objects"))
        return {self.OUTPUT: output}
