"""Clustering fitted on a sample of pixels (k-means by default, any scikit-learn clusterer or mixture model),
applied to every pixel afterwards.

Clusterers with ``predict`` (KMeans, MiniBatchKMeans, BisectingKMeans, Birch, MeanShift, AffinityPropagation,
GaussianMixture, ...) label new pixels themselves. Those without it (DBSCAN, HDBSCAN, OPTICS, agglomerative and
spectral clustering) only label the sample; every other pixel takes the label of its nearest sample pixel in
(standardised) feature space, which follows the shape of density clusters. A pixel whose nearest sample pixel is
noise (label −1) is noise too.

Cluster ``i`` is written as value ``i``. Noise gets its own class, the value after the last cluster, named
"noise" and coloured dark grey, or becomes nodata when ``noise_as_nodata`` is set (then it cannot be told apart from
nodata in the input).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tiling.outputs import ClassInfo
from .errors import EstimatorError
from .estimators import BuiltEstimator, fit_failure
from .fitted import FittedModel
from .palette import NOISE_RGB, category_colours
from .reduction import scaler_steps


def _cluster_count(est: Any, labels: np.ndarray) -> int:
    """Number of cluster labels the fitted estimator can give: seen in the sample, or known from the model."""
    count = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    for attr in ("cluster_centers_", "means_"):
        value = getattr(est, attr, None)
        if value is not None:
            count = max(count, len(value))
    n_clusters = getattr(est, "n_clusters", None)
    if isinstance(n_clusters, int) and not isinstance(n_clusters, bool):
        count = max(count, n_clusters)
    return count


def fit_clusterer(sample: np.ndarray, built: BuiltEstimator, band_names: tuple[str, ...], standardize: bool = True,
                  noise_as_nodata: bool = False, params: dict[str, Any] | None = None) -> FittedModel:
    """Fit ``built`` on ``sample`` ``(pixels, bands)``; the result labels any pixel (see the module doc)."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline

    est = built.estimator
    notes: dict[str, Any] = {"sample_pixels": int(len(sample))}
    try:
        if hasattr(est, "predict"):
            pipeline = Pipeline([*scaler_steps(standardize), ("cluster", est)]).fit(sample)
            labels = np.asarray(pipeline.predict(sample))
        else:
            steps = scaler_steps(standardize)
            x = steps[0][1].fit_transform(sample) if steps else sample
            labels = np.asarray(est.fit_predict(x))
            pipeline = Pipeline([*steps, ("nearest", KNeighborsClassifier(n_neighbors=1).fit(x, labels))])
            notes["out_of_sample"] = (f"{built.name} has no predict: every pixel outside the sample takes the label "
                                      "of its nearest sample pixel in feature space")
    except (ValueError, TypeError, ArithmeticError, np.linalg.LinAlgError) as exc:
        raise fit_failure(built, len(sample), exc, standardize) from exc
    labels = labels.astype(np.int64)
    count = _cluster_count(est, labels)
    if count == 0:
        raise EstimatorError(
            f"{built.name} found no cluster in the sample: every pixel is noise. Loosen its parameters (e.g. a larger "
            "eps for DBSCAN, a smaller min_cluster_size for HDBSCAN) or enlarge the sample."
        )
    colours = category_colours(count)
    classes = tuple(ClassInfo(i, f"cluster {i}", colours[i]) for i in range(count))
    has_noise = bool((labels < 0).any())
    noise = ClassInfo(count, "noise", NOISE_RGB) if has_noise and not noise_as_nodata else None
    values, sizes = np.unique(labels, return_counts=True)
    notes["sample_cluster_sizes"] = {("noise" if v < 0 else f"cluster {v}"): int(s) for v, s in zip(values, sizes,
                                                                                                    strict=True)}
    inertia = getattr(est, "inertia_", None)
    if inertia is not None:
        notes["inertia"] = float(inertia)
    return FittedModel(kind="cluster", name=built.name, estimator=pipeline, method="predict",
                       band_names=tuple(band_names), classes=classes, noise=noise,
                       params={"estimator_params": built.params, "standardize": standardize,
                               "noise_as_nodata": noise_as_nodata, **(params or {})},
                       notes=notes)
