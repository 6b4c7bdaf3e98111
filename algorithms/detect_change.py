"""Processing algorithm "Detect change": two rasters of the same place compared pixel by pixel — from–to change of
two class rasters with an area table, or a change score and mask of two feature rasters."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from qgis.core import (
    QgsProcessingOutputNumber,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..analysis.change import MASK_CLASSES, class_change, feature_change
from ..tiling.errors import RasterInputError
from .analysis_common import style_classes, style_ramp
from .base import DeepRasterAlgorithm, callbacks_for
from .execution import backend_value, execution_parameters, pixel_mapper


class DetectChangeAlgorithm(DeepRasterAlgorithm):
    search_tags = ("change detection", "from-to", "land cover change", "time series", "bitemporal",
                   "cosine similarity", "Otsu", "difference", "features", "deep learning")
    summary = "Compares two dates of a place: from–to change of class rasters, or a change mask from features."
    required_packages: dict[str, str] = {}  # numpy and GDAL only

    SECOND = "SECOND"
    MODE = "MODE"
    MODES = ("class rasters (from–to change)", "feature rasters (change score and mask)")
    THRESHOLD = "THRESHOLD"
    OUTPUT = "OUTPUT"
    OUTPUT_SCORE = "OUTPUT_SCORE"
    OUTPUT_TABLE = "OUTPUT_TABLE"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    THRESHOLD_USED = "THRESHOLD_USED"
    CHANGED_PERCENT = "CHANGED_PERCENT"

    def name(self) -> str:
        return "detect_change"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Detect change")

    def group(self) -> str:
        return self.tr("Feature-space analysis")

    def groupId(self) -> str:  # noqa: N802 (QGIS API)
        return "feature_space_analysis"

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Compares two rasters of the same place (two dates). The second is put on the first's grid when its "
            "grid differs (reprojected when the CRS differ; nearest neighbour for classes, their most common value "
            "where the second's pixels are much finer, bilinear for features). "
            "Pixels that are nodata on either date are nodata in the outputs.\n\n"
            "Class rasters (band 1 of each, e.g. two outputs of Classify pixels): the change raster holds 0 where "
            "the class stayed the same and one code per from–to pair otherwise, styled with names such as "
            "\"water → forest\" (the rasters' class names when they have them). The area table (CSV and HTML) "
            "lists every from–to pair with its pixels, area (m² and hectares, by latitude in a geographic CRS; "
            "also map units²) and share. Two class rasters whose class names sit on different values (legends "
            "numbered differently) are matched by name.\n"
            "Feature rasters (e.g. two outputs of Extract features with the same model, or any two rasters with "
            "the same bands): the change score is 1 − cosine similarity of the two feature vectors (0 same, 2 "
            "opposite; nodata where a vector is zero); the change mask is 1 where the score is above the threshold "
            "(advanced; 0: Otsu's automatic threshold on a histogram of √score). The threshold used is "
            "logged and returned.\n"
            "Processed window by window: rasters of any size fit in memory. Advanced: the writing pass can run on a "
            "Dask cluster (the two rasters and the output folder must then be reachable by every worker)."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("First raster (earlier date)")))
        self.addParameter(QgsProcessingParameterRasterLayer(self.SECOND, self.tr("Second raster (later date)")))
        self.addParameter(QgsProcessingParameterEnum(self.MODE, self.tr("Compare"), options=list(self.MODES),
                                                     defaultValue=0))
        threshold = QgsProcessingParameterNumber(
            self.THRESHOLD, self.tr("Change threshold, feature mode (0: automatic, Otsu)"),
            QgsProcessingParameterNumber.Double, 0.0)
        threshold.setFlags(threshold.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(threshold)
        self.add_advanced(execution_parameters(self.tr))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT, self.tr("Change raster (from–to codes, or change mask)")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_SCORE, self.tr("Change score (feature mode)"), optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_TABLE, self.tr("From–to area table, CSV (class mode)"), self.tr("CSV files (*.csv)"),
            optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_REPORT, self.tr("From–to area table, HTML (class mode)"), self.tr("HTML files (*.html)"),
            optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber(self.THRESHOLD_USED, self.tr("Change threshold used (feature mode)")))
        self.addOutput(QgsProcessingOutputNumber(self.CHANGED_PERCENT, self.tr("Changed pixels (%)")))

    def _path(self, parameters, context, name: str) -> str | None:
        if not parameters.get(name):
            return None
        definition = self.parameterDefinition(name)
        if isinstance(definition, QgsProcessingParameterRasterDestination):
            return self.parameterAsOutputLayer(parameters, name, context) or None
        return self.parameterAsFileOutput(parameters, name, context) or None

    def run_algorithm(self, parameters, context, feedback) -> dict:
        layers = [self.parameterAsRasterLayer(parameters, name, context) for name in (self.INPUT, self.SECOND)]
        if any(layer is None for layer in layers):
            raise RasterInputError("A raster could not be loaded. Choose two raster layers or files GDAL can read.")
        first, second = (layer.source() for layer in layers)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        callbacks = callbacks_for(feedback)
        with self._mapper(parameters, context, output) as (mapper, folder):
            return self._compare(parameters, context, feedback, first, second, output, callbacks, mapper, folder)

    @contextmanager
    def _mapper(self, parameters, context, output: str) -> Iterator[tuple[Callable, str | None]]:
        """Where pixels are mapped: this process, or the Dask cluster chosen (then the pair's VRTs go into a hidden
        folder beside the output, which every worker can read, removed afterwards; after a hard kill, by the next
        run to the same output, as every partial file)."""
        backend = backend_value(self, parameters, context)
        if not backend.distributed:
            yield pixel_mapper(backend), None
            return
        target = Path(output).absolute()
        folder = str(target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial-pair"))
        os.mkdir(folder)  # the umask's permissions, as the pieces' folder: workers of the same group read it
        try:
            yield pixel_mapper(backend), folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _compare(self, parameters, context, feedback, first: str, second: str, output: str, callbacks,
                 mapper: Callable, folder: str | None) -> dict:
        classes = self.parameterAsEnum(parameters, self.MODE, context) == 0
        unused = (self.OUTPUT_SCORE,) if classes else (self.OUTPUT_TABLE, self.OUTPUT_REPORT)
        for name in unused:
            if self._path(parameters, context, name):
                feedback.pushWarning(f"{self.parameterDefinition(name).description()}: not written when comparing "
                                     f"{self.MODES[0 if classes else 1]}.")
        if classes:
            csv_path, html_path = self._path(parameters, context, self.OUTPUT_TABLE), \
                self._path(parameters, context, self.OUTPUT_REPORT)
            result = class_change(first, second, output, csv_path, html_path, callbacks, mapper, folder)
            changed, total = result.table.totals()
            style_classes(context, output, result.table.classes(), self.layer_name(parameters, context, "change"))
            return {self.OUTPUT: output, self.OUTPUT_SCORE: None, self.OUTPUT_TABLE: csv_path,
                    self.OUTPUT_REPORT: html_path, self.THRESHOLD_USED: None,
                    self.CHANGED_PERCENT: 100.0 * changed / total}
        threshold = self.parameterAsDouble(parameters, self.THRESHOLD, context)
        score_path = self._path(parameters, context, self.OUTPUT_SCORE)
        result = feature_change(first, second, output, score_path, threshold if threshold != 0 else None, callbacks,
                                mapper, folder)
        style_classes(context, output, MASK_CLASSES, self.layer_name(parameters, context, "change mask"))
        style_ramp(context, score_path, self.layer_name(parameters, context, "change score"),
                   min(2.0, 2.0 * result.threshold))  # the threshold mid-ramp
        return {self.OUTPUT: output, self.OUTPUT_SCORE: score_path, self.OUTPUT_TABLE: None,
                self.OUTPUT_REPORT: None, self.THRESHOLD_USED: result.threshold,
                self.CHANGED_PERCENT: 100.0 * result.changed / max(result.compared, 1)}
