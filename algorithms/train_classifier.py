"""Processing algorithm "Train a classifier or regressor": supervised learning from reference points or polygons,
validated honestly (random, group or spatial-block folds, or an independent test layer), mapped over the raster."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)
from qgis.PyQt.QtCore import QVariant

from ..analysis.errors import EstimatorError, TrainingDataError
from ..analysis.pipeline import train_and_map, training_set
from ..analysis.supervised import TrainingSet
from ..analysis.validation import SCHEMES, ValidationPlan
from .analysis_common import AnalysisAlgorithm, style_classes
from .base import callbacks_for


class TrainClassifierAlgorithm(AnalysisAlgorithm):
    search_tags = ("supervised classification", "classification", "regression", "random forest", "training",
                   "accuracy", "validation", "land cover", "scikit-learn", "machine learning")
    summary = "Trains a classifier or regressor on reference points or polygons, scores it and maps every pixel."
    TRAINING = "TRAINING"
    LABEL_FIELD = "LABEL_FIELD"
    TASK = "TASK"
    VALIDATION = "VALIDATION"
    FOLDS = "FOLDS"
    GROUP_FIELD = "GROUP_FIELD"
    BLOCK_SIZE = "BLOCK_SIZE"
    TEST_LAYER = "TEST_LAYER"
    PIXELS_PER_POLYGON = "PIXELS_PER_POLYGON"
    MAX_SAMPLES = "MAX_SAMPLES"
    OUTPUT_PROBABILITIES = "OUTPUT_PROBABILITIES"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    OUTPUT_REPORT_JSON = "OUTPUT_REPORT_JSON"

    METHODS = ("RandomForest", "ExtraTrees", "HistGradientBoosting", "GradientBoosting", "KNeighbors", "SVM",
               "Linear")
    TASKS = ("Automatic (from the label field's type)", "Classification",
             "Regression")
    VALIDATIONS = ("Random k-fold (optimistic)",
                   "Group k-fold (whole polygons or groups)",
                   "Spatial block k-fold",
                   "Independent test layer", "None")

    def name(self) -> str:
        return "train_classifier"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Train a classifier or regressor")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Learns to predict a label field of reference points or polygons from the raster's bands (deep features "
            "or spectral bands), reports how accurate it is, and maps every pixel.\n\n"
            "Samples: the pixel under each point; for polygons the pixel centres inside, at most the given number "
            "per polygon (seeded random subset), and at most the maximum overall. Layers in another CRS are "
            "reprojected. Features outside the raster, without label or on nodata are reported and skipped.\n"
            "Task: text or integer labels → classification (integer labels keep their values in the map; text "
            "labels become 1, 2, ... alphabetically, names in the colour table); decimal labels → regression.\n"
            "Methods: RandomForest (default), ExtraTrees, HistGradientBoosting, GradientBoosting, KNeighbors, SVM, "
            "Linear (logistic or linear regression), or any scikit-learn classifier/regressor by name (advanced), "
            "with keyword arguments as JSON; only arguments the estimator accepts are allowed, the seed is passed "
            "only to estimators that take one.\n"
            "Validation: random k-fold puts pixels of one polygon in training and test, so it overstates accuracy; "
            "group k-fold keeps each polygon (or group of the group field) whole; spatial block k-fold keeps whole "
            "squares of the given size (map units) together; an independent test layer scores the final model on "
            "other data. Report: overall accuracy, Cohen's kappa, macro F1, per-class precision/recall/F1 and the "
            "confusion matrix (or R², RMSE, MAE), pooled over the folds, as HTML and JSON.\n"
            "The model kept (map, saved file) is always refitted on all samples. Probabilities (optional): one band "
            "per class. The map is written window by window: rasters of any size fit in memory; the extent limits "
            "the map, while reference data are read anywhere in the raster."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_raster_parameters()
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.TRAINING, self.tr("Training points or polygons"),
            [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(
            self.LABEL_FIELD, self.tr("Label field"), parentLayerParameterName=self.TRAINING))
        self.addParameter(QgsProcessingParameterEnum(self.TASK, self.tr("Task"), options=list(self.TASKS),
                                                     defaultValue=0))
        self.add_method_parameters(self.METHODS, "Method")
        self.addParameter(QgsProcessingParameterEnum(self.VALIDATION, self.tr("Validation"),
                                                     options=list(self.VALIDATIONS), defaultValue=1))
        self.addParameter(QgsProcessingParameterNumber(self.FOLDS, self.tr("Number of folds"),
                                                       QgsProcessingParameterNumber.Integer, 5, minValue=2,
                                                       maxValue=100))
        self.addParameter(QgsProcessingParameterField(
            self.GROUP_FIELD, self.tr("Group field (empty: one group a polygon)"),
            parentLayerParameterName=self.TRAINING, optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.BLOCK_SIZE, self.tr("Spatial block size (map units)"),
            QgsProcessingParameterNumber.Double, 1000.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.TEST_LAYER, self.tr("Independent test layer"),
            [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.PIXELS_PER_POLYGON, self.tr("Pixels sampled per polygon (at most)"),
            QgsProcessingParameterNumber.Integer, 500, minValue=1))
        self.add_advanced([QgsProcessingParameterNumber(
            self.MAX_SAMPLES, self.tr("Training samples (at most, drawn at random)"),
            QgsProcessingParameterNumber.Integer, 100000, minValue=2)])
        self.add_seed_parameter()
        self.add_standardize_parameter()
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Prediction")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_PROBABILITIES, self.tr("Class probabilities"), optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_REPORT, self.tr("Accuracy report (HTML)"), self.tr("HTML files (*.html)"), optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_REPORT_JSON, self.tr("Accuracy report (JSON)"), self.tr("JSON files (*.json)"),
            optional=True))
        self.add_model_output()
        self.add_execution_parameters()

    def run_algorithm(self, parameters, context, feedback) -> dict:
        raster = self.raster_input(parameters, context)
        training = self.parameterAsSource(parameters, self.TRAINING, context)
        label = self.parameterAsString(parameters, self.LABEL_FIELD, context)
        if not label:
            raise TrainingDataError("Choose the label field of the training layer.")
        task = self._task(parameters, context, training, label)
        built = self.estimator(parameters, context, "classifier" if task == "classification" else "regressor")
        probabilities = self.parameterAsOutputLayer(parameters, self.OUTPUT_PROBABILITIES, context) or None
        self._check_probabilities(probabilities, task, built)
        plan = ValidationPlan(SCHEMES[self.parameterAsEnum(parameters, self.VALIDATION, context)],
                              self.parameterAsInt(parameters, self.FOLDS, context),
                              self.parameterAsDouble(parameters, self.BLOCK_SIZE, context),
                              self.parameterAsInt(parameters, self.SEED, context))
        group_field = self.parameterAsString(parameters, self.GROUP_FIELD, context) or None
        train = self._samples(parameters, context, feedback, raster, training, label, group_field, "training layer")
        test = None
        if plan.scheme == "test_set":
            test_source = self.parameterAsSource(parameters, self.TEST_LAYER, context)
            if test_source is None:
                raise TrainingDataError("Validation by an independent test layer needs a test layer. Choose one, or "
                                        "another validation.")
            test = self._samples(parameters, context, feedback, raster, test_source, label, None, "test layer")
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        fitted, report = train_and_map(raster.selection, train, task, built, plan,
                                       self.parameterAsBool(parameters, self.STANDARDIZE, context), output,
                                       probabilities, test,
                                       {"label_field": label, "bands": list(raster.selection.bands),
                                        "seed": plan.seed}, callbacks_for(feedback))
        outputs = self._write_reports(parameters, context, report)
        if task == "classification":
            style_classes(context, output, fitted.classes,
                          self.layer_name(parameters, context, f"{label} ({built.name})"))
        return {self.OUTPUT: output, self.OUTPUT_PROBABILITIES: probabilities, **outputs,
                self.OUTPUT_MODEL: self.save_model_output(fitted, parameters, context, feedback)}

    def _task(self, parameters, context, training, label: str) -> str:
        choice = self.parameterAsEnum(parameters, self.TASK, context)
        if choice:
            return ("classification", "regression")[choice - 1]
        if training is None:
            raise TrainingDataError("The training layer could not be loaded. Choose a point or polygon layer.")
        index = training.fields().lookupField(label)
        numeric_decimal = index >= 0 and training.fields().at(index).type() == QVariant.Double
        return "regression" if numeric_decimal else "classification"

    @staticmethod
    def _check_probabilities(path: str | None, task: str, built) -> None:
        if not path:
            return
        if task != "classification":
            raise EstimatorError("Class probabilities exist for classification only; leave that output empty.")
        if not hasattr(built.estimator, "predict_proba"):
            hint = ' (add {"probability": true} to the keyword arguments)' if built.name in ("SVC", "NuSVC") else ""
            raise EstimatorError(f"{built.name} gives no class probabilities{hint}. Leave the probability output "
                                 "empty, or choose another method.")

    def _samples(self, parameters, context, feedback, raster, source, label: str, group_field: str | None,
                 role: str) -> TrainingSet:
        layer = self.reference_layer(source, raster, context, feedback, label, group_field,
                                     self.parameterAsInt(parameters, self.PIXELS_PER_POLYGON, context), role)
        return training_set(raster.selection, layer, self.parameterAsInt(parameters, self.SEED, context),
                            self.parameterAsInt(parameters, self.MAX_SAMPLES, context), callbacks_for(feedback))

    def _write_reports(self, parameters, context, report) -> dict:
        html_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context) or None
        json_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT_JSON, context) or None
        report.write(html_path, json_path)  # both or neither
        return {self.OUTPUT_REPORT: html_path, self.OUTPUT_REPORT_JSON: json_path}
