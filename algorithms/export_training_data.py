"""Processing algorithm "Export training data": image and label chips of a raster for training a segmentation model,
split by spatial blocks, into a folder (ours and Esri's Classified_Tiles layout). The core is
:func:`training.export.export_training_data`; this adapter reads the parameters and hands it plain geometries in the
raster's CRS."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from qgis.core import (
    QgsFeatureRequest,
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
    QgsProcessingUtils,
    QgsWkbTypes,
)

from ..models.class_tables import read_class_table
from ..tiling.destinations import Destination
from ..training.errors import TrainingDataError
from ..training.export import ExportRequest, export_training_data
from .analysis_common import mask_polygons, reference_features
from .band_parameters import band_numbers
from .base import TrainingGroupAlgorithm, callbacks_for


class ExportTrainingDataAlgorithm(TrainingGroupAlgorithm):
    search_tags = ("training data", "chips", "tiles", "labels", "segmentation", "deep learning", "export",
                   "classified tiles", "arcgis", "validation split", "spatial blocks", "unet")
    summary = "Exports image and label chips with a spatial-block validation split, for training a segmentation model."
    required_packages: dict[str, str] = {}  # GDAL and numpy only
    LABELS = "LABELS"
    LABEL_FIELD = "LABEL_FIELD"
    LABEL_RASTER = "LABEL_RASTER"
    CLASS_TABLE = "CLASS_TABLE"
    BANDS = "BANDS"
    CHIP_SIZE = "CHIP_SIZE"
    STRIDE = "STRIDE"
    MIN_LABELLED = "MIN_LABELLED"
    BACKGROUND = "BACKGROUND"
    BLOCK_SIZE = "BLOCK_SIZE"
    VALIDATION_FRACTION = "VALIDATION_FRACTION"
    SEED = "SEED"
    OVERWRITE = "OVERWRITE"
    MASK = "MASK"
    OUTPUT = "OUTPUT"
    MANIFEST = "MANIFEST"
    TRAIN_CHIPS = "TRAIN_CHIPS"
    VALIDATION_CHIPS = "VALIDATION_CHIPS"

    def name(self) -> str:
        return "export_training_data"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Export training data")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Cuts a raster and its labels into image and label chips (georeferenced, tiled, DEFLATE-compressed "
            "GeoTIFFs) for training a segmentation model, and splits them into training and validation by spatial "
            "blocks, so validation measures how the model does on places it never saw.\n\n"
            "Labels: a polygon layer with a class field (numbers, or names: sorted names become 0, 1, 2 ...) or a "
            "class raster (whole numbers 0–254). Polygons in another CRS are reprojected; invalid geometries are "
            "repaired, or skipped, and counted in the log. Pixels outside every label get the ignore value 255, "
            "unless 'Unlabelled pixels are background' is ticked (then they are class 0, background).\n"
            "Class table (optional): a CSV of value, name, #rrggbb, a QGIS colour map export or a .qml; empty: "
            "derived from the labels.\n"
            "Chips: full chips of the chip size every stride pixels; a chip is kept when at least the minimum "
            "labelled fraction of its pixels is labelled; inside the extent, and with mask polygons only where all its "
            "pixels lie inside them.\n"
            "Split: blocks of the block size (map units; 0: 10 chips) are drawn at random (seed) as validation "
            "(fraction) or training; chips within one chip of a block of the other split are dropped, so no chip "
            "lies in both and a gap of one chip separates them. Every class must have pixels in both splits.\n"
            "Output folder (new or empty; an earlier export is replaced only with 'Overwrite'): images/, labels/, "
            "manifest.json (bands, class table, mean/std of the training chips, CRS, pixel size, each chip's split "
            "and window, pixel counts per class and split) and Esri's Classified_Tiles files (world files, "
            "esri_model_definition.emd, esri_accumulated_stats.json, map.txt, stats.txt). Nothing is written when "
            "the run fails or is cancelled."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_export_parameters(
            [QgsProcessingParameterFeatureSource(self.LABELS, self.tr("Label polygons"),
                                                 [QgsProcessing.TypeVectorPolygon], optional=True),
             QgsProcessingParameterField(self.LABEL_FIELD, self.tr("Class field (numbers or names)"),
                                         parentLayerParameterName=self.LABELS, optional=True),
             QgsProcessingParameterRasterLayer(self.LABEL_RASTER, self.tr("Class raster (instead of polygons)"),
                                               optional=True)],
            self.tr("Class table (empty: from the labels)"),
            [QgsProcessingParameterBoolean(self.BACKGROUND, self.tr("Unlabelled pixels are background (class 0)"),
                                           False),
             self.extent_parameter(),
             QgsProcessingParameterFeatureSource(self.MASK, self.tr("Mask polygons (chips only inside)"),
                                                 [QgsProcessing.TypeVectorPolygon], optional=True)],
            advanced=[QgsProcessingParameterNumber(
                self.MIN_LABELLED, self.tr("Minimum labelled fraction of a chip"),
                QgsProcessingParameterNumber.Double, 0.05, minValue=0.0, maxValue=1.0)])

    def add_export_parameters(self, labels: Sequence[QgsProcessingParameterDefinition], class_table_label: str,
                              options: Sequence[QgsProcessingParameterDefinition],
                              advanced: Sequence[QgsProcessingParameterDefinition] = (), chip_size: int = 256,
                              stride: bool = True) -> None:
        """Add, in dialog order: the input raster, ``labels``, the class table (``class_table_label``), bands, chip
        size (default ``chip_size``), ``options``, validation block size and fraction, overwrite and the output
        folder; under "Advanced": the stride (unless ``stride`` is False), ``advanced`` and the split's seed; then
        the manifest and chip count outputs."""
        number = QgsProcessingParameterNumber
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Input raster")))
        for param in labels:
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterFile(
            self.CLASS_TABLE, class_table_label, optional=True,
            fileFilter="Class tables (*.csv *.txt *.qml);;All files (*.*)"))
        self.addParameter(QgsProcessingParameterBand(
            self.BANDS, self.tr("Bands (empty: all)"), parentLayerParameterName=self.INPUT, optional=True,
            allowMultiple=True))
        self.addParameter(number(self.CHIP_SIZE, self.tr("Chip size, px"), number.Integer, chip_size, minValue=16,
                                 maxValue=8192))
        for param in options:
            self.addParameter(param)
        self.addParameter(number(self.BLOCK_SIZE, self.tr("Validation block size, map units (0: 10 chips)"),
                                 number.Double, 0.0, minValue=0.0))
        self.addParameter(number(self.VALIDATION_FRACTION, self.tr("Validation fraction of the blocks"),
                                 number.Double, 0.2, minValue=0.01, maxValue=0.99))
        self.addParameter(QgsProcessingParameterBoolean(
            self.OVERWRITE, self.tr("Overwrite a non-empty output folder"), False))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, self.tr("Output folder")))
        self.add_advanced([
            *([number(self.STRIDE, self.tr("Stride, px (0: the chip size)"), number.Integer, 0, minValue=0,
                      maxValue=8192)] if stride else []),
            *advanced,
            number(self.SEED, self.tr("Random seed (split)"), number.Integer, 0, minValue=0),
        ])
        self.addOutput(QgsProcessingOutputFile(self.MANIFEST, self.tr("Manifest (manifest.json)")))
        self.addOutput(QgsProcessingOutputNumber(self.TRAIN_CHIPS, self.tr("Training chips")))
        self.addOutput(QgsProcessingOutputNumber(self.VALIDATION_CHIPS, self.tr("Validation chips")))

    def extent_parameter(self) -> QgsProcessingParameterExtent:
        """The optional processing extent of the chips."""
        return QgsProcessingParameterExtent(self.EXTENT, self.tr("Extent (empty: whole raster)"), optional=True)

    def export_values(self, parameters, context) -> dict[str, Any]:
        """The parameters of :meth:`add_export_parameters` that both exports read alike, as request fields: classes,
        bands, chip_size, stride, block_size, validation_fraction, seed, overwrite and the run's inputs."""
        table = self.parameterAsFile(parameters, self.CLASS_TABLE, context)
        return {
            "classes": read_class_table(table) if table else None,
            "bands": tuple(band_numbers(self, parameters, self.BANDS, context)),
            "chip_size": self.parameterAsInt(parameters, self.CHIP_SIZE, context),
            "stride": self.parameterAsInt(parameters, self.STRIDE, context) or None,
            "block_size": self.parameterAsDouble(parameters, self.BLOCK_SIZE, context) or None,
            "validation_fraction": self.parameterAsDouble(parameters, self.VALIDATION_FRACTION, context),
            "seed": self.parameterAsInt(parameters, self.SEED, context),
            "overwrite": self.parameterAsBool(parameters, self.OVERWRITE, context),
            "inputs": tuple(self.run_inputs(parameters, context)),
        }

    def export_outputs(self, output: str, chips: dict[str, int]) -> dict:
        """The run's outputs: the folder, its manifest and the training and validation chip counts."""
        return {self.OUTPUT: output, self.MANIFEST: os.path.join(output, "manifest.json"),
                self.TRAIN_CHIPS: chips["train"], self.VALIDATION_CHIPS: chips["validation"]}

    def run_destinations(self, parameters, context) -> list[Destination]:
        """The output folder; one that does not exist yet is created by the run, so its parent is checked."""
        out = []
        for dest in super().run_destinations(parameters, context):
            path = os.path.expanduser(str(dest.path))
            if dest.kind == "folder" and not os.path.exists(path):
                dest = Destination(os.path.dirname(os.path.abspath(path)), dest.label, "folder")
            out.append(dest)
        return out

    def output_folder(self, parameters, context) -> str:
        """The output folder's path (a temporary output's parent folder created)."""
        output = self.parameterAsString(parameters, self.OUTPUT, context)
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context) or output
        temp_root = os.path.realpath(QgsProcessingUtils.tempFolder())
        if os.path.realpath(output).startswith(temp_root + os.sep):
            os.makedirs(os.path.dirname(output), exist_ok=True)
        return output

    def run_algorithm(self, parameters, context, feedback) -> dict:
        layer, source, region = self.input_source(parameters, context)
        output = self.output_folder(parameters, context)
        label_raster = self.parameterAsRasterLayer(parameters, self.LABEL_RASTER, context)
        polygons = None
        field = self.parameterAsString(parameters, self.LABEL_FIELD, context)
        if label_raster is None:
            polygons = self._polygons(parameters, context, layer, field)
        elif parameters.get(self.LABELS):
            raise TrainingDataError("Give either label polygons or a class raster, not both.")
        request = ExportRequest(
            raster=source.path, output=output, polygons=polygons,
            label_raster=label_raster.source() if label_raster is not None else None,
            min_labelled=self.parameterAsDouble(parameters, self.MIN_LABELLED, context),
            background=self.parameterAsBool(parameters, self.BACKGROUND, context), region=region, label_field=field,
            **self.export_values(parameters, context), mask=mask_polygons(self, parameters, context, layer.crs()))
        result = export_training_data(request, callbacks_for(feedback))
        return self.export_outputs(output, result.chips)

    def _polygons(self, parameters, context, layer, field: str, points: bool = False) -> list[tuple[bytes, object]]:
        """The label polygons (and with ``points`` points) as (WKB in the raster's CRS, class value); NULL
        geometries as empty WKB."""
        check = context.invalidGeometryCheck()
        context.setInvalidGeometryCheck(QgsFeatureRequest.GeometryNoCheck)  # repaired or skipped by the core
        try:
            labels = self.parameterAsSource(parameters, self.LABELS, context)
        finally:
            context.setInvalidGeometryCheck(check)
        if labels is None:
            raise TrainingDataError("Give labels: a polygon layer with its class field, or a class raster.")
        kinds = (QgsWkbTypes.PolygonGeometry, QgsWkbTypes.PointGeometry) if points else (QgsWkbTypes.PolygonGeometry,)
        if QgsWkbTypes.geometryType(labels.wkbType()) not in kinds:
            raise TrainingDataError("The label layer must hold points or polygons (a chip is cut around each)."
                                    if points else
                                    "The label layer must hold polygons (points and lines label no area).")
        index = labels.fields().lookupField(field) if field else -1
        if index < 0:
            names = ", ".join(f.name() for f in labels.fields()) or "none"
            what = f"The class field {field!r} is not in the label layer" if field else \
                "Choose the class field of the label layer"
            raise TrainingDataError(f"{what} (its fields: {names}).")
        return [(f.wkb or b"", f.label) for f in reference_features(labels, layer.crs(), context, index, -1)]
