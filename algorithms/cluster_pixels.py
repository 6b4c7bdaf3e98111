"""Processing algorithm "Cluster pixels": k-means, Gaussian mixtures, BIRCH, HDBSCAN, DBSCAN or any scikit-learn
clusterer, fitted on a sample of pixels and applied to every pixel, window by window."""

from __future__ import annotations

from functools import partial

from qgis.core import (
    QgsProcessingParameterBoolean,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
)

from ..analysis.clustering import fit_clusterer
from .analysis_common import AnalysisAlgorithm, style_classes


class ClusterPixelsAlgorithm(AnalysisAlgorithm):
    search_tags = ("clustering", "unsupervised classification", "kmeans", "k-means", "hdbscan", "segmentation",
                   "features", "scikit-learn", "machine learning")
    summary = "Groups pixels with similar bands or deep features into clusters (k-means, HDBSCAN ...), without labels."
    N_CLUSTERS = "N_CLUSTERS"
    NOISE_AS_NODATA = "NOISE_AS_NODATA"
    METHODS = ("KMeans", "MiniBatchKMeans", "GaussianMixture", "Birch", "BisectingKMeans", "HDBSCAN", "DBSCAN")

    def name(self) -> str:
        return "cluster_pixels"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Cluster pixels")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Groups pixels with similar band vectors (deep features or spectral bands) into clusters, without "
            "labels. Output: a class raster (cluster i = value i) with a colour table; nodata 255 (65535 beyond 254 "
            "clusters).\n\n"
            "The clusterer is fitted on a random sample of valid pixels (size and seed parameters), then applied "
            "window by window, so rasters of any size fit in memory. Nodata and NaN pixels are never used and stay "
            "nodata.\n"
            "Methods: KMeans (default), MiniBatchKMeans, GaussianMixture, Birch, BisectingKMeans, HDBSCAN, DBSCAN, "
            "and any scikit-learn clusterer by name (advanced), with keyword arguments as JSON, e.g. "
            "{\"min_cluster_size\": 50} for HDBSCAN. The number of clusters goes to n_clusters (or n_components for "
            "mixtures); density methods (DBSCAN, HDBSCAN, OPTICS, MeanShift) find it themselves.\n"
            "Clusterers without predict (DBSCAN, HDBSCAN, OPTICS, agglomerative, spectral) label only the sample: "
            "every other pixel takes the cluster of its nearest sample pixel in feature space.\n"
            "Noise (label −1 of density methods) gets its own class, the value after the last cluster, named "
            "\"noise\"; or nodata if ticked.\n"
            "Bands are standardised before fitting unless unticked. The fitted model can be saved and applied "
            "later with \"Apply a saved model\"."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.add_raster_parameters()
        self.add_method_parameters(self.METHODS, "Method")
        self.addParameter(QgsProcessingParameterNumber(
            self.N_CLUSTERS, self.tr("Number of clusters (methods that take one)"),
            QgsProcessingParameterNumber.Integer, 8, minValue=2, maxValue=65534))
        self.add_sampling_parameters(20000)
        self.add_advanced([QgsProcessingParameterBoolean(
            self.NOISE_AS_NODATA, self.tr("Noise pixels become nodata"), False)])
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Clusters")))
        self.add_model_output()
        self.add_execution_parameters()

    def run_algorithm(self, parameters, context, feedback) -> dict:
        k = self.parameterAsInt(parameters, self.N_CLUSTERS, context)
        built = self.estimator(parameters, context, "cluster", size=(k, ("n_clusters", "n_components")))
        if built.size_param is None:
            feedback.pushInfo(f"{built.name} finds the number of clusters itself; {k} is not used.")
        fit = partial(fit_clusterer, noise_as_nodata=self.parameterAsBool(parameters, self.NOISE_AS_NODATA, context))
        fitted, output = self.fit_on_sample_and_map(parameters, context, feedback, built, fit)
        style_classes(context, output, fitted.all_classes,
                      self.layer_name(parameters, context, f"{built.name} clusters"))
        return {self.OUTPUT: output, self.OUTPUT_MODEL: self.save_model_output(fitted, parameters, context, feedback)}
