"""Processing algorithm "Export object classification training data": one image chip per feature of a point or
polygon layer, labelled with the feature's class, split by spatial blocks, into a folder in Esri's Labeled_Tiles
layout (plus our manifest), for training an object classifier. The core is
:func:`training.labeled_tiles.export_labeled_tiles`; this adapter reads the parameters and hands it plain geometries
in the raster's CRS."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
)

from ..training.labeled_tiles import TilesExportRequest, export_labeled_tiles
from .base import DEEP_LEARNING_PACKAGES, callbacks_for
from .export_training_data import ExportTrainingDataAlgorithm


class ExportObjectClassificationDataAlgorithm(ExportTrainingDataAlgorithm):
    search_tags = ("training data", "object classification", "image classification", "labeled tiles", "chips",
                   "points", "polygons", "tree crowns", "alive dead", "deep learning", "export", "arcgis",
                   "validation split")
    summary = "Exports one labelled image chip per point or polygon (Esri Labeled_Tiles) for training a classifier."
    required_packages = DEEP_LEARNING_PACKAGES  # chips are resampled as Classify objects does it, with torch
    BUFFER = "BUFFER"
    CHIP_PIXELS = "CHIP_PIXELS"

    def name(self) -> str:
        return "export_object_classification_data"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Export object classification training data")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Cuts one image chip around each feature of a point or polygon layer, labelled with the feature's class, "
            "for training an object classifier (Train object classifier), and splits the chips into training and "
            "validation by spatial blocks.\n\n"
            "Features: points or polygons with a class field of numbers or names (sorted names become 0, 1, 2 ...); "
            "layers in another CRS are reprojected. Class table (optional): a CSV of value, name, #rrggbb, a QGIS "
            "colour map export or a .qml.\n"
            "Chips: exactly the chip Classify objects reads for the feature: its extent made square plus the buffer "
            "(map units of the raster's CRS) on every side, or, with a chip size in raster pixels, that many raster "
            "pixels centred on it (points without a buffer: the chip size in raster pixels); resampled to the chip "
            "size by area over the valid pixels and written as float32 in raster values (NaN where no valid pixel "
            "lies under a chip pixel). Use the same buffer or raster-pixel size in Classify objects. Features off "
            "the raster or on nodata are skipped and counted.\n"
            "Split: blocks of the block size (map units; 0: 10 chips) are drawn at random (seed) as validation "
            "(fraction) or training; a chip is kept only when all the blocks it touches have one split, so no chip "
            "shares a pixel with a chip of the other split. Every class must have chips in the training split.\n"
            "Output folder (new or empty; an earlier export is replaced only with 'Overwrite'): images/ (chips with "
            "world files), labels/ (one PASCAL VOC .xml per chip: one object named with the class, its box the "
            "feature's extent in the chip), manifest.json (bands, class table, mean/std of the training chips, CRS, "
            "buffer, each chip's split, window, class and feature) and Esri's Labeled_Tiles files "
            "(esri_model_definition.emd, esri_accumulated_stats.json, map.txt, stats.txt). Nothing is written when "
            "the run fails or is cancelled."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        number = QgsProcessingParameterNumber
        self.add_export_parameters(
            [QgsProcessingParameterFeatureSource(self.LABELS, self.tr("Points or polygons (one chip each)"),
                                                 [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon]),
             QgsProcessingParameterField(self.LABEL_FIELD, self.tr("Class field (numbers or names)"),
                                         parentLayerParameterName=self.LABELS)],
            self.tr("Class table (empty: from the class field)"),
            [number(self.BUFFER, self.tr("Buffer around each feature (raster CRS units)"), number.Double, 0.0,
                    minValue=0.0),
             number(self.CHIP_PIXELS, self.tr("Chip size, raster px (0: feature extent + buffer)"), number.Integer, 0,
                    minValue=0, maxValue=100000)],
            chip_size=64, stride=False)

    def run_algorithm(self, parameters, context, feedback) -> dict:
        layer, source, _ = self.input_source(parameters, context)
        output = self.output_folder(parameters, context)
        field = self.parameterAsString(parameters, self.LABEL_FIELD, context)
        values = self.export_values(parameters, context)
        del values["stride"]
        request = TilesExportRequest(
            raster=source.path, output=output, features=self._polygons(parameters, context, layer, field, True),
            buffer=self.parameterAsDouble(parameters, self.BUFFER, context),
            chip_pixels=self.parameterAsInt(parameters, self.CHIP_PIXELS, context) or None, label_field=field,
            **values)
        result = export_labeled_tiles(request, callbacks_for(feedback))
        return self.export_outputs(output, result.chips)
