"""Processing algorithm "Evaluate a class map": a class raster against reference polygons or a reference class raster
over an extent; confusion matrix, per-class IoU / precision / recall / F1, mIoU, overall accuracy and kappa, as HTML
and JSON, and as numbers a Model Builder model can use."""

from __future__ import annotations

import os
import uuid

from qgis.core import (
    QgsProcessing,
    QgsProcessingOutputNumber,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingUtils,
    QgsWkbTypes,
)

from ..analysis.errors import EvaluationError
from ..analysis.evaluation import PolygonReference, RasterReference, class_table, evaluate_classes, label_values
from ..tiling.errors import RasterInputError
from ..training.chips import read_chip_folder
from .analysis_common import reference_features
from .base import TrainingGroupAlgorithm, callbacks_for


class EvaluateClassesAlgorithm(TrainingGroupAlgorithm):
    search_tags = ("accuracy assessment", "evaluation", "confusion matrix", "IoU", "mIoU", "kappa", "overall accuracy",
                   "validation", "reference", "ground truth", "segmentation", "land cover")
    summary = "Scores a class raster against reference polygons or a reference raster: IoU, accuracy, kappa."
    required_packages: dict[str, str] = {}  # numpy and GDAL only
    REFERENCE = "REFERENCE"
    CLASS_FIELD = "CLASS_FIELD"
    REFERENCE_RASTER = "REFERENCE_RASTER"
    CHIPS = "CHIPS"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    OUTPUT_REPORT_JSON = "OUTPUT_REPORT_JSON"
    OA = "OA"
    MIOU = "MIOU"
    KAPPA = "KAPPA"

    def name(self) -> str:
        return "evaluate_classes"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Evaluate a class map")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Measures how well a class raster (from Classify pixels, a random forest of the analysis tools, or any "
            "other source) agrees with reference labels, pixel by pixel.\n\n"
            "Reference: polygons with a class field, a reference class raster, or the folder of a training data "
            "export (its validation chips: the pixels a training report scores). The class field holds class "
            "values, or class names matched (case-insensitive) with the class raster's category names; names that "
            "match no class are reported and skipped. Polygons label the pixels whose centres they contain (where "
            "polygons overlap, the later one counts); layers in another CRS are reprojected. A reference raster on "
            "another grid is resampled by nearest neighbour onto the class raster's grid.\n"
            "Extent (optional): only the class raster's pixels it touches are scored. Pixels that are nodata in "
            "either raster, or carry no reference label, are left out.\n"
            "Report (HTML and JSON): confusion matrix (pixels; rows reference, columns class raster), per-class IoU, "
            "precision, recall, F1 and pixel counts, mean IoU (over the classes present in the reference), overall "
            "accuracy and Cohen's kappa. OA, MIOU and KAPPA are also outputs for the Model Builder.\n"
            "Read block by block: rasters of any size fit in memory."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Class raster")))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.REFERENCE, self.tr("Reference polygons"), [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterField(
            self.CLASS_FIELD, self.tr("Class field (values or class names)"), parentLayerParameterName=self.REFERENCE,
            optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.REFERENCE_RASTER, self.tr("Reference class raster (instead of polygons)"), optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.CHIPS, self.tr("or the validation chips of a training export"),
            behavior=QgsProcessingParameterFile.Folder, optional=True))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, self.tr("Extent (empty: whole class raster)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_REPORT, self.tr("Evaluation report (HTML)"), self.tr("HTML files (*.html)")))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_REPORT_JSON, self.tr("Evaluation report (JSON)"), self.tr("JSON files (*.json)"),
            optional=True))
        self.addOutput(QgsProcessingOutputNumber(self.OA, self.tr("Overall accuracy (0–1)")))
        self.addOutput(QgsProcessingOutputNumber(self.MIOU, self.tr("Mean IoU (0–1)")))
        self.addOutput(QgsProcessingOutputNumber(self.KAPPA, self.tr("Cohen's kappa")))

    def run_algorithm(self, parameters, context, feedback) -> dict:
        layer, source, region = self.input_source(parameters, context)
        if source.band_count != 1:
            feedback.pushWarning(f"{os.path.basename(source.path)} has {source.band_count} bands: band 1 is the "
                                 "class raster evaluated.")
        polygons = self.parameterAsSource(parameters, self.REFERENCE, context)
        raster = self.parameterAsRasterLayer(parameters, self.REFERENCE_RASTER, context) \
            if parameters.get(self.REFERENCE_RASTER) else None
        chips = self.parameterAsFile(parameters, self.CHIPS, context)
        if [polygons is not None, raster is not None, bool(chips)].count(True) != 1:
            raise EvaluationError("Choose one reference: reference polygons with their class field, a reference "
                                  "class raster, or the folder of a training data export (its validation chips).")
        if chips:
            reference = RasterReference(validation_labels(chips, QgsProcessingUtils.tempFolder()))
        elif raster is not None:
            reference = RasterReference(raster.source())
        else:
            reference = self._polygons(parameters, context, feedback, polygons, layer, source.path)
        callbacks = callbacks_for(feedback)
        report = evaluate_classes(source.path, reference, region, callbacks)
        for warning in report.warnings:
            feedback.pushWarning(warning)
        feedback.pushInfo(report.summary())
        html_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context) or None
        json_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT_JSON, context) or None
        report.write(html_path, json_path)
        headline = report.headline()
        return {self.OUTPUT_REPORT: html_path, self.OUTPUT_REPORT_JSON: json_path,
                self.OA: headline["overall_accuracy"], self.MIOU: headline["miou"], self.KAPPA: headline["kappa"]}

    def _polygons(self, parameters, context, feedback, polygons, layer, class_path: str) -> PolygonReference:
        """The reference polygons in the class raster's CRS with their class values (names mapped to values)."""
        if QgsWkbTypes.geometryType(polygons.wkbType()) != QgsWkbTypes.PolygonGeometry:
            raise EvaluationError("The reference layer must hold polygons. Choose a polygon layer.")
        name = self.parameterAsString(parameters, self.CLASS_FIELD, context)
        if not name:
            raise EvaluationError("Choose the class field of the reference polygons.")
        index = polygons.fields().lookupField(name)
        if index < 0:
            fields = ", ".join(f.name() for f in polygons.fields()) or "none"
            raise EvaluationError(f"The field {name!r} is not in the reference layer; its fields are: {fields}. "
                                  "Choose one of these.")
        features = list(reference_features(polygons, layer.crs(), context, index, -1))
        usable = [f for f in features if f.wkb is not None and f.label is not None]
        skipped = len(features) - len(usable)
        try:
            values, warnings = label_values([f.label for f in usable], class_table(class_path))
        except RuntimeError as exc:  # GDAL could not read the class table
            raise RasterInputError(f"Cannot read the classes of {class_path} ({exc}).") from exc
        if skipped:
            warnings.append(f"{skipped} reference feature(s) without geometry or class (or not reprojectable) were "
                            "skipped.")
        pairs = [(f.wkb, v) for f, v in zip(usable, values, strict=True) if v is not None]
        return PolygonReference(pairs, polygons.sourceName(), name, tuple(warnings))


def validation_labels(folder: str, temp_folder: str) -> str:
    """A VRT mosaic of the validation label chips of a training export (unlabelled pixels and everything outside
    the chips are nodata), so that exactly the pixels the training report scored are evaluated."""
    from osgeo import gdal

    chips = read_chip_folder(folder)
    labels = [str(chip.label) for chip in chips.chips if chip.split == "validation"]
    if not labels:
        raise EvaluationError(f"{folder} has no validation chips (an Esri export carries no split). Choose reference "
                              "polygons or a reference class raster instead.")
    nodata = 255 if chips.ignore_value is None else chips.ignore_value
    path = os.path.join(temp_folder, f"validation_labels_{uuid.uuid4().hex[:8]}.vrt")
    mosaic = gdal.BuildVRT(path, labels, srcNodata=nodata, VRTNodata=nodata)
    if mosaic is None:
        raise EvaluationError(f"Cannot mosaic the validation label chips of {folder}: {gdal.GetLastErrorMsg()}")
    mosaic = None  # written to disk when closed
    return path
