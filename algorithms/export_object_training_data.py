"""Processing algorithm "Export object training data": image chips of a raster with the boxes of a polygon layer, for
training an object detector, split by spatial blocks, into a folder (PASCAL VOC, COCO JSON, ours and Esri's
PASCAL_VOC_rectangles layout). The core is :func:`training.object_export.export_object_training_data`; this adapter
reads the parameters and hands it plain geometries in the raster's CRS."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
)

from ..training.object_export import LABEL_FORMATS, ObjectExportRequest, export_object_training_data
from .base import callbacks_for
from .export_training_data import ExportTrainingDataAlgorithm


class ExportObjectTrainingDataAlgorithm(ExportTrainingDataAlgorithm):
    search_tags = ("training data", "object detection", "boxes", "bounding boxes", "chips", "pascal voc", "coco",
                   "deep learning", "export", "arcgis", "validation split", "trees")
    summary = "Exports image chips with the boxes of a polygon layer (PASCAL VOC, COCO) for training a detector."
    MIN_VISIBLE = "MIN_VISIBLE"
    KEEP_EMPTY = "KEEP_EMPTY"
    LABEL_FORMAT = "LABEL_FORMAT"

    def name(self) -> str:
        return "export_object_training_data"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Export object training data")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Cuts a raster into image chips (georeferenced, tiled GeoTIFFs) with the boxes of the objects on them, "
            "for training an object detector (Train object detector), and splits them into training and "
            "validation by spatial blocks.\n\n"
            "Boxes: a polygon layer (each feature's bounding rectangle in the raster's CRS is a box; layers in "
            "another CRS are reprojected) with a class field of numbers or names (sorted names become 0, 1, 2 ...). "
            "Class table (optional): a CSV of value, name, #rrggbb, a QGIS colour map export or a .qml.\n"
            "Chips: full chips of the chip size every stride pixels. A chip keeps each box of which at least the "
            "minimum visible fraction lies inside it, clipped to the chip (marked truncated); boxes mostly outside "
            "are dropped. Chips without a box are skipped unless 'Keep chips without objects' is ticked. Boxes "
            "larger than a chip are refused.\n"
            "Split: blocks of the block size (map units; 0: 10 chips) are drawn at random (seed) as validation "
            "(fraction) or training; chips within one chip of a block of the other split are dropped, so no box lies "
            "in both. Every class must have boxes in the training chips.\n"
            "Output folder (new or empty; an earlier export is replaced only with 'Overwrite'): images/ (chips with "
            "world files), labels/ (one PASCAL VOC .xml per chip, or one KITTI .txt with the label format "
            "KITTI_rectangles; pixel coordinates of the chip), coco_train.json "
            "and coco_validation.json, manifest.json (bands, class table, mean/std of the training chips, CRS, each "
            "chip's split, window and boxes, box counts) and Esri's PASCAL_VOC_rectangles (or KITTI_rectangles) files "
            "(esri_model_definition.emd, esri_accumulated_stats.json, map.txt, stats.txt). Nothing is written when "
            "the run fails or is cancelled."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_export_parameters(
            [QgsProcessingParameterFeatureSource(self.LABELS, self.tr("Object polygons (boxes)"),
                                                 [QgsProcessing.TypeVectorPolygon]),
             QgsProcessingParameterField(self.LABEL_FIELD, self.tr("Class field (numbers or names)"),
                                         parentLayerParameterName=self.LABELS)],
            self.tr("Class table (empty: from the class field)"),
            [QgsProcessingParameterNumber(self.MIN_VISIBLE, self.tr("Minimum visible fraction of a clipped box"),
                                          QgsProcessingParameterNumber.Double, 0.5, minValue=0.01, maxValue=1.0),
             QgsProcessingParameterBoolean(self.KEEP_EMPTY, self.tr("Keep chips without objects"), False),
             self.extent_parameter(),
             QgsProcessingParameterEnum(self.LABEL_FORMAT, self.tr("Label files (Esri metadata format)"),
                                        options=list(LABEL_FORMATS), defaultValue=0)])

    def run_algorithm(self, parameters, context, feedback) -> dict:
        layer, source, region = self.input_source(parameters, context)
        output = self.output_folder(parameters, context)
        field = self.parameterAsString(parameters, self.LABEL_FIELD, context)
        request = ObjectExportRequest(
            raster=source.path, output=output, boxes=self._polygons(parameters, context, layer, field),
            min_visible=self.parameterAsDouble(parameters, self.MIN_VISIBLE, context),
            keep_empty=self.parameterAsBool(parameters, self.KEEP_EMPTY, context), region=region, label_field=field,
            label_format=LABEL_FORMATS[self.parameterAsEnum(parameters, self.LABEL_FORMAT, context)],
            **self.export_values(parameters, context))
        result = export_object_training_data(request, callbacks_for(feedback))
        return self.export_outputs(output, result.chips)
