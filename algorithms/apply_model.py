"""Processing algorithm "Apply a saved model": a reduction, clustering, classifier or regressor saved by one of
the feature-space analysis algorithms, applied to a raster window by window."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
)

from ..analysis.pipeline import apply_saved_model
from .analysis_common import AnalysisAlgorithm, style_classes
from .base import callbacks_for


class ApplyModelAlgorithm(AnalysisAlgorithm):
    search_tags = ("apply", "predict", "saved model", "joblib", "classification", "clustering", "scikit-learn",
                   "machine learning")
    summary = "Applies a model saved by Reduce dimensions, Cluster pixels or Train a classifier to a raster."
    MODEL = "MODEL"
    TRUST = "TRUST"
    OUTPUT_PROBABILITIES = "OUTPUT_PROBABILITIES"

    def name(self) -> str:
        return "apply_model"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Apply a saved model")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Applies a model saved by \"Reduce dimensions\", \"Cluster pixels\" or \"Train a classifier or "
            "regressor\" (a .joblib file with its .joblib.json description) to a raster, window by window.\n\n"
            "Bands: choose the bands the model was trained on, in the same order (empty: all bands); their count "
            "must match, and differing band names are reported.\n"
            "Safety: .joblib files are Python pickles, and loading one runs any code it contains. Only files saved "
            "by this plugin under your user account (their signature is checked) are loaded, unless you tick "
            "\"I trust this model file\"; tick it only for files whose origin you know. A trusted file without "
            "description is applied according to its methods (classifier, regressor or transform)."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_raster_parameters()
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, self.tr("Saved model (.joblib)"), behavior=QgsProcessingParameterFile.File,
            fileFilter=self.tr("Deep Raster scikit-learn model (*.joblib);;All files (*)")))
        self.addParameter(QgsProcessingParameterBoolean(
            self.TRUST, self.tr("I trust this model file (pickles can run code)"), False))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Result")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_PROBABILITIES, self.tr("Class probabilities (classifiers)"), optional=True,
            createByDefault=False))
        self.add_execution_parameters()

    def run_algorithm(self, parameters, context, feedback) -> dict:
        raster = self.raster_input(parameters, context)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        probabilities = self.parameterAsOutputLayer(parameters, self.OUTPUT_PROBABILITIES, context) or None
        fitted = apply_saved_model(raster.selection, self.parameterAsFile(parameters, self.MODEL, context),
                                   self.parameterAsBool(parameters, self.TRUST, context), output, probabilities,
                                   callbacks_for(feedback))
        if fitted.kind in ("cluster", "classifier"):
            style_classes(context, output, fitted.all_classes, self.layer_name(parameters, context, fitted.name))
        return {self.OUTPUT: output, self.OUTPUT_PROBABILITIES: probabilities}
