"""Processing algorithm "Reduce dimensions": PCA, t-SNE, UMAP or any scikit-learn decomposition, fitted on a sample
of pixels and applied to every pixel, window by window."""

from __future__ import annotations

from qgis.core import QgsProcessingParameterNumber, QgsProcessingParameterRasterDestination

from ..analysis.estimators import REDUCTION
from ..analysis.reduction import fit_reducer
from .analysis_common import AnalysisAlgorithm


class ReduceDimensionsAlgorithm(AnalysisAlgorithm):
    search_tags = ("pca", "umap", "t-sne", "tsne", "dimensionality reduction", "features", "embedding", "scikit-learn",
                   "machine learning")
    summary = "Projects every pixel's bands or features onto a few components (PCA, UMAP, t-SNE ...)."
    N_COMPONENTS = "N_COMPONENTS"
    METHODS = ("PCA", "TSNE", "UMAP", "FastICA", "FactorAnalysis", "KernelPCA", "Isomap", "NMF", "TruncatedSVD")

    def name(self) -> str:
        return "reduce_dimensions"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Reduce dimensions")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Projects every pixel's band vector (deep features or spectral bands) onto a few components, e.g. 3 to "
            "look at as an RGB image. Output: float32 raster, one band per component, nodata NaN.\n\n"
            "The method is fitted on a random sample of valid pixels (size and seed parameters), then applied "
            "window by window, so rasters of any size fit in memory. Nodata and NaN pixels are never used and stay "
            "nodata.\n"
            "Methods: PCA (default), UMAP (needs the optional package umap-learn: python -m pip install umap-learn "
            "\"numpy<2\" in QGIS's Python; its first run in a QGIS session spends about half a minute compiling), "
            "t-SNE, and any scikit-learn decomposition or manifold estimator by name "
            "(advanced), with keyword arguments as JSON, e.g. {\"perplexity\": 50} for TSNE; only arguments the "
            "estimator accepts are allowed.\n"
            "t-SNE, MDS and spectral embedding cannot transform new points: the sample is embedded, and every other "
            "pixel gets the distance-weighted mean embedding of its 5 nearest sample pixels in feature space. "
            "Keep their sample small (a few thousand pixels): they scale badly with it.\n"
            "Bands are standardised (zero mean, unit variance, from the sample) before fitting unless unticked.\n"
            "The fitted model can be saved (.joblib with a signed .json description) and applied later with "
            "\"Apply a saved model\"."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_raster_parameters()
        self.add_method_parameters(self.METHODS, "Method")
        self.addParameter(QgsProcessingParameterNumber(
            self.N_COMPONENTS, self.tr("Number of components"), QgsProcessingParameterNumber.Integer, 3, minValue=1,
            maxValue=1024))
        self.add_sampling_parameters(10000)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Reduced raster")))
        self.add_model_output()
        self.add_execution_parameters()

    def run_algorithm(self, parameters, context, feedback) -> dict:
        n = self.parameterAsInt(parameters, self.N_COMPONENTS, context)
        built = self.estimator(parameters, context, REDUCTION, size=(n, ("n_components",)))
        if not hasattr(built.estimator, "transform"):
            feedback.pushInfo(f"{built.name} cannot transform new pixels: it embeds the sample (its cost grows fast "
                              "with the sample size; a few thousand pixels is plenty) and maps the other pixels by "
                              "their nearest sample pixels.")
        fitted, output = self.fit_on_sample_and_map(parameters, context, feedback, built, fit_reducer)
        return {self.OUTPUT: output, self.OUTPUT_MODEL: self.save_model_output(fitted, parameters, context, feedback)}
