"""Processing algorithm "Similarity map": cosine similarity of every pixel to the mean feature vector of reference
points or polygons, one band per class, optionally thresholded into a class map."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)

from ..analysis.pipeline import similarity_map
from .analysis_common import AnalysisAlgorithm, style_classes, style_ramp
from .base import callbacks_for


class SimilarityMapAlgorithm(AnalysisAlgorithm):
    search_tags = ("similarity", "cosine", "search", "few-shot", "reference", "features", "embedding", "deep learning")
    summary = "Cosine similarity of every pixel to the mean features of reference points or polygons."
    required_packages: dict[str, str] = {}  # numpy only: works without scikit-learn

    REFERENCE = "REFERENCE"
    CLASS_FIELD = "CLASS_FIELD"
    POINTS_PER_POLYGON = "POINTS_PER_POLYGON"
    CENTRE = "CENTRE"
    THRESHOLD = "THRESHOLD"
    OUTPUT_CLASSES = "OUTPUT_CLASSES"

    def name(self) -> str:
        return "similarity_map"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Similarity map")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Finds pixels that look like a few reference examples. For each class of the reference layer (or for "
            "all its features together when no class field is chosen), the mean band vector of the reference "
            "pixels is computed, and every pixel gets its cosine similarity to each class mean (−1 to 1; 1 = same "
            "direction). Output: float32, one band per class, nodata NaN.\n\n"
            "Reference: points (the pixel under each) or polygons (pixel centres inside each, at most the given "
            "number per polygon, drawn at random with the seed). Layers in another CRS are reprojected to the "
            "raster's. Features outside the raster, without class, or on nodata pixels are reported in the log and "
            "skipped.\n"
            "Centring (advanced) subtracts the raster's mean vector (from a sample) first: useful for all-positive "
            "bands such as reflectances, whose similarities otherwise bunch near 1.\n"
            "Class map (optional output): the class of highest similarity where it reaches the threshold (classes "
            "1, 2, ... in alphabetical order), 0 = no match.\n"
            "Processed window by window: rasters of any size fit in memory."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_raster_parameters()
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.REFERENCE, self.tr("Reference points or polygons"),
            [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(
            self.CLASS_FIELD, self.tr("Class field (empty: one class)"),
            parentLayerParameterName=self.REFERENCE, optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.POINTS_PER_POLYGON, self.tr("Pixels sampled per polygon"), QgsProcessingParameterNumber.Integer, 50,
            minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            self.THRESHOLD, self.tr("Similarity threshold for the class map"), QgsProcessingParameterNumber.Double,
            0.9, minValue=-1.0, maxValue=1.0))
        self.add_seed_parameter()
        self.add_advanced([QgsProcessingParameterBoolean(
            self.CENTRE, self.tr("Centre bands on the raster mean"), False)])
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Similarity")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_CLASSES, self.tr("Class map (most similar class)"), optional=True,
            createByDefault=False))
        self.add_execution_parameters()

    def run_algorithm(self, parameters, context, feedback) -> dict:
        raster = self.raster_input(parameters, context)
        seed = self.parameterAsInt(parameters, self.SEED, context)
        field = self.parameterAsString(parameters, self.CLASS_FIELD, context) or None
        ref = self.read_reference(self.parameterAsSource(parameters, self.REFERENCE, context), raster, context,
                                  feedback, field, None, self.parameterAsInt(parameters, self.POINTS_PER_POLYGON,
                                                                             context), seed, "reference layer")
        labels = [str(v) for v in ref.labels] if field else ["reference"] * len(ref.cols)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        classes_path = self.parameterAsOutputLayer(parameters, self.OUTPUT_CLASSES, context) or None
        prototypes = similarity_map(raster.selection, ref, labels, output, classes_path,
                                    self.parameterAsDouble(parameters, self.THRESHOLD, context),
                                    self.parameterAsBool(parameters, self.CENTRE, context), seed,
                                    callbacks_for(feedback))
        if len(prototypes.names) == 1:
            style_ramp(context, output, self.layer_name(parameters, context, "similarity"))
        style_classes(context, classes_path, prototypes.classes(),
                      self.layer_name(parameters, context, "most similar class"))
        return {self.OUTPUT: output, self.OUTPUT_CLASSES: classes_path}
