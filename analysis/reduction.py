"""Dimensionality reduction fitted on a sample of pixels (PCA by default, any scikit-learn decomposition or
manifold method, UMAP when umap-learn is installed), applied to every pixel afterwards.

Methods with ``transform`` (PCA, ICA, NMF, Isomap, UMAP, ...) transform new pixels themselves. Methods without it
(t-SNE, MDS, spectral embedding) only embed the points they were fitted on; the scalable choice made here: embed the
sample, then map every other pixel to the distance-weighted mean embedding of its ``neighbours`` nearest sample
pixels in (standardised) feature space. A sample pixel maps exactly onto its own embedding; the map costs one
nearest-neighbour query per pixel, so it streams like any transform.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .estimators import BuiltEstimator, fit_failure
from .fitted import FittedModel

NEIGHBOURS = 5
"""Sample pixels whose embeddings are averaged for a pixel, for methods without ``transform``."""


def scaler_steps(standardize: bool) -> list[tuple[str, Any]]:
    """The first pipeline steps: a StandardScaler (zero mean, unit variance per band) or nothing."""
    from sklearn.preprocessing import StandardScaler

    return [("standardize", StandardScaler())] if standardize else []


def fit_reducer(sample: np.ndarray, built: BuiltEstimator, band_names: tuple[str, ...], standardize: bool = True,
                neighbours: int = NEIGHBOURS, params: dict[str, Any] | None = None) -> FittedModel:
    """Fit ``built`` on ``sample`` ``(pixels, bands)``; the result transforms any pixel (see the module doc)."""
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import Pipeline

    est = built.estimator
    notes: dict[str, Any] = {"sample_pixels": int(len(sample))}
    try:
        if hasattr(est, "transform"):
            pipeline = Pipeline([*scaler_steps(standardize), ("reduce", est)]).fit(sample)
            method = "transform"
            n_out = int(pipeline.transform(sample[:1]).shape[1])
        else:
            steps = scaler_steps(standardize)
            x = steps[0][1].fit_transform(sample) if steps else sample
            embedding = np.asarray(est.fit_transform(x), np.float64)
            k = min(int(neighbours), len(sample))
            mapper = KNeighborsRegressor(n_neighbors=k, weights="distance").fit(x, embedding)
            pipeline = Pipeline([*steps, ("map", mapper)])
            method = "predict"
            n_out = int(embedding.shape[1])
            notes["out_of_sample"] = (f"{built.name} has no transform: the sample was embedded, every other pixel "
                                      f"gets the distance-weighted mean embedding of its {k} nearest sample pixels "
                                      "in feature space")
    except (ValueError, TypeError, ArithmeticError, np.linalg.LinAlgError) as exc:
        raise fit_failure(built, len(sample), exc, standardize) from exc
    ratio = getattr(est, "explained_variance_ratio_", None)
    if ratio is not None:
        notes["explained_variance_ratio"] = [round(float(v), 6) for v in ratio]
    return FittedModel(kind="reduction", name=built.name, estimator=pipeline, method=method,
                       band_names=tuple(band_names), outputs=tuple(f"{built.name} {i + 1}" for i in range(n_out)),
                       params={"estimator_params": built.params, "standardize": standardize, **(params or {})},
                       notes=notes)
