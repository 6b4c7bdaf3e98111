"""Processing algorithm "Export object training data": image chips of a raster with the boxes of a polygon layer, for
training an object detector, split by spatial blocks, into a folder (PASCAL VOC, COCO JSON, ours and Esri's
PASCAL_VOC_rectangles layout). The core is :func:`training.object_export.export_object_training_data`; this adapter
reads the parameters and hands it plain geometries in the raster's CRS."""

from __future__ import annotations

import os

from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from ..models.class_tables import read_class_table
from ..training.object_export import ObjectExportRequest, export_object_training_data
from .band_parameters import band_numbers
from .base import callbacks_for
from .export_training_data import ExportTrainingDataAlgorithm


class ExportObjectTrainingDataAlgorithm(ExportTrainingDataAlgorithm):
    search_tags = ("training data", "object detection", "boxes", "bounding boxes", "chips", "pascal voc", "coco",
                   "deep learning", "export", "arcgis", "validation split", "trees")
    summary = "Exports image chips with the boxes of a polygon layer (PASCAL VOC, COCO) for training a detector."
    MIN_VISIBLE = "MIN_VISIBLE"
    KEEP_EMPTY = "KEEP_EMPTY"

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
            "world files), labels/ (one PASCAL VOC .xml per chip, pixel coordinates of the chip), coco_train.json "
            "and coco_validation.json, manifest.json (bands, class table, mean/std of the training chips, CRS, each "
            "chip's split, window and boxes, box counts) and Esri's PASCAL_VOC_rectangles files "
            "(esri_model_definition.emd, esri_accumulated_stats.json, map.txt, stats.txt). Nothing is written when "
            "the run fails or is cancelled."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        number = QgsProcessingParameterNumber
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Input raster")))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.LABELS, self.tr("Object polygons (boxes)"), [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(
            self.LABEL_FIELD, self.tr("Class field (numbers or names)"), parentLayerParameterName=self.LABELS))
        self.addParameter(QgsProcessingParameterFile(
            self.CLASS_TABLE, self.tr("Class table (empty: from the class field)"), optional=True,
            fileFilter="Class tables (*.csv *.txt *.qml);;All files (*.*)"))
        self.addParameter(QgsProcessingParameterBand(
            self.BANDS, self.tr("Bands (empty: all)"), parentLayerParameterName=self.INPUT, optional=True,
            allowMultiple=True))
        self.addParameter(number(self.CHIP_SIZE, self.tr("Chip size, px"), number.Integer, 256, minValue=16,
                                 maxValue=8192))
        self.addParameter(number(self.MIN_VISIBLE, self.tr("Minimum visible fraction of a clipped box"),
                                 number.Double, 0.5, minValue=0.01, maxValue=1.0))
        self.addParameter(QgsProcessingParameterBoolean(
            self.KEEP_EMPTY, self.tr("Keep chips without objects"), False))
        self.addParameter(QgsProcessingParameterExtent(
            self.EXTENT, self.tr("Extent (empty: whole raster)"), optional=True))
        self.addParameter(number(self.BLOCK_SIZE, self.tr("Validation block size, map units (0: 10 chips)"),
                                 number.Double, 0.0, minValue=0.0))
        self.addParameter(number(self.VALIDATION_FRACTION, self.tr("Validation fraction of the blocks"),
                                 number.Double, 0.2, minValue=0.01, maxValue=0.99))
        self.addParameter(QgsProcessingParameterBoolean(
            self.OVERWRITE, self.tr("Overwrite a non-empty output folder"), False))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, self.tr("Output folder")))
        for param in (number(self.STRIDE, self.tr("Stride, px (0: the chip size)"), number.Integer, 0, minValue=0,
                             maxValue=8192),
                      number(self.SEED, self.tr("Random seed (split)"), number.Integer, 0, minValue=0)):
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addOutput(QgsProcessingOutputFile(self.MANIFEST, self.tr("Manifest (manifest.json)")))
        self.addOutput(QgsProcessingOutputNumber(self.TRAIN_CHIPS, self.tr("Training chips")))
        self.addOutput(QgsProcessingOutputNumber(self.VALIDATION_CHIPS, self.tr("Validation chips")))

    def run_algorithm(self, parameters, context, feedback) -> dict:
        layer, source, region = self.input_source(parameters, context)
        output = self.output_folder(parameters, context)
        field = self.parameterAsString(parameters, self.LABEL_FIELD, context)
        table = self.parameterAsFile(parameters, self.CLASS_TABLE, context)
        request = ObjectExportRequest(
            raster=source.path, output=output, boxes=self._polygons(parameters, context, layer, field),
            classes=read_class_table(table) if table else None,
            bands=tuple(band_numbers(self, parameters, self.BANDS, context)),
            chip_size=self.parameterAsInt(parameters, self.CHIP_SIZE, context),
            stride=self.parameterAsInt(parameters, self.STRIDE, context) or None,
            min_visible=self.parameterAsDouble(parameters, self.MIN_VISIBLE, context),
            keep_empty=self.parameterAsBool(parameters, self.KEEP_EMPTY, context), region=region,
            block_size=self.parameterAsDouble(parameters, self.BLOCK_SIZE, context) or None,
            validation_fraction=self.parameterAsDouble(parameters, self.VALIDATION_FRACTION, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            overwrite=self.parameterAsBool(parameters, self.OVERWRITE, context), label_field=field,
            inputs=tuple(self.run_inputs(parameters, context)))
        result = export_object_training_data(request, callbacks_for(feedback))
        return {self.OUTPUT: output, self.MANIFEST: os.path.join(output, "manifest.json"),
                self.TRAIN_CHIPS: result.chips["train"], self.VALIDATION_CHIPS: result.chips["validation"]}
