"""scikit-learn estimators by name: registries per kind, keyword arguments as JSON checked against each estimator.

Registries are built by introspection of scikit-learn's public modules, so every estimator of the installed
scikit-learn is available under its class name (case and ``_``/``-``/spaces do not matter), plus short aliases
("RandomForest", "SVM", "KNN", "GMM", "tSNE" ...). Estimators whose constructor needs other estimators or arrays
(StackingClassifier, SparseCoder, ...) cannot be described in JSON and are left out, with a message saying so.

Keyword arguments are checked against the estimator's own parameter list before anything runs: a rejected name is
named, with close matches. Nothing is injected that the estimator does not take: the seed goes to ``random_state``
only where it exists (IAMAP passed ``random_state`` to every estimator, which broke KNeighborsClassifier), and the
number of components or clusters goes to the first of the given parameter names the estimator has; the few
:data:`DEFAULTS` (UMAP's approximate neighbour search for mapping whole rasters) yield to the keyword arguments.
"""

from __future__ import annotations

import difflib
import inspect
import json
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from ..tiling.errors import DependencyError
from .errors import EstimatorError

ESTIMATOR_KINDS = ("decomposition", "manifold", "cluster", "classifier", "regressor")
REDUCTION = "reduction"
"""Pseudo-kind for dimensionality reduction: decomposition + manifold, plus UMAP when umap-learn is installed."""

_MODULES = {
    "decomposition": ("sklearn.decomposition", "sklearn.random_projection"),
    "manifold": ("sklearn.manifold",),
    "cluster": ("sklearn.cluster", "sklearn.mixture"),
}
_LABELS = {"decomposition": "decomposition method", "manifold": "manifold method", "cluster": "clustering method",
           "classifier": "classifier", "regressor": "regressor", REDUCTION: "reduction method"}
UNSUPPORTED = {
    "FeatureAgglomeration": "it groups bands, not pixels",
    "SpectralBiclustering": "it clusters rows and columns of a matrix, not pixels",
    "SpectralCoclustering": "it clusters rows and columns of a matrix, not pixels",
}
ALIASES = {
    REDUCTION: {"tsne": "TSNE", "ica": "FastICA", "svd": "TruncatedSVD", "lle": "LocallyLinearEmbedding",
                "umap": "UMAP"},
    "cluster": {"gmm": "GaussianMixture", "gaussianmixturemodel": "GaussianMixture", "minibatch": "MiniBatchKMeans",
                "kmeans": "KMeans", "bgmm": "BayesianGaussianMixture"},
    "classifier": {"randomforest": "RandomForestClassifier", "rf": "RandomForestClassifier",
                   "extratrees": "ExtraTreesClassifier", "gradientboosting": "GradientBoostingClassifier",
                   "histgradientboosting": "HistGradientBoostingClassifier", "hgb": "HistGradientBoostingClassifier",
                   "knn": "KNeighborsClassifier", "kneighbors": "KNeighborsClassifier", "svm": "SVC",
                   "logistic": "LogisticRegression", "linear": "LogisticRegression", "mlp": "MLPClassifier"},
    "regressor": {"randomforest": "RandomForestRegressor", "rf": "RandomForestRegressor",
                  "extratrees": "ExtraTreesRegressor", "gradientboosting": "GradientBoostingRegressor",
                  "histgradientboosting": "HistGradientBoostingRegressor", "hgb": "HistGradientBoostingRegressor",
                  "knn": "KNeighborsRegressor", "kneighbors": "KNeighborsRegressor", "svm": "SVR",
                  "linear": "LinearRegression", "mlp": "MLPRegressor"},
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "UMAP": {"force_approximation_algorithm": True},
}
"""Arguments given to an estimator unless the keyword arguments set them. UMAP: fitted on fewer than 4096 points, its
transform computes the exact distance of every new pixel to every fitted point through a Python-level metric (about
1 ms per pixel for 1000 points); with the approximate nearest-neighbour index (always used from 4096 points on) it
maps 5000–8000 pixels/s whatever the sample size."""
UMAP_HINT = (
    "UMAP needs the optional package umap-learn, which is not installed. Install it into the Python that QGIS uses, "
    "then restart QGIS: python -m pip install umap-learn \"numpy<2\" (on Windows in the OSGeo4W Shell). "
    "Or choose another method, e.g. PCA, or TSNE for a non-linear embedding."
)


@dataclass
class BuiltEstimator:
    """An unfitted estimator and how it was made: canonical name and every argument given to it."""

    estimator: Any
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    size_param: str | None = None  # the parameter that received the number of components / clusters, if any


def normalise(name: str) -> str:
    """Lower case without spaces, ``_`` and ``-``: the form names are compared in."""
    return re.sub(r"[\s_\-]", "", str(name)).lower()


def _needs_arguments(cls: type) -> bool:
    """True when the constructor has a parameter without default (an estimator or array JSON cannot give)."""
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.default is inspect.Parameter.empty and p.name != "self"
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


SKLEARN_MODULES = (
    "sklearn.decomposition", "sklearn.random_projection", "sklearn.manifold", "sklearn.cluster", "sklearn.mixture",
    "sklearn.ensemble", "sklearn.linear_model", "sklearn.neighbors", "sklearn.svm", "sklearn.tree",
    "sklearn.naive_bayes", "sklearn.discriminant_analysis", "sklearn.neural_network", "sklearn.gaussian_process",
    "sklearn.semi_supervised", "sklearn.kernel_ridge", "sklearn.isotonic", "sklearn.cross_decomposition",
    "sklearn.dummy", "sklearn.calibration", "sklearn.compose", "sklearn.multioutput", "sklearn.multiclass",
)
"""Where estimators are looked for. ``sklearn.utils.all_estimators`` is not used: it imports every scikit-learn
module, including the array-API glue that imports PyTorch (3 s and 500 MB more inside QGIS)."""


@cache
def _all() -> tuple[tuple[str, type], ...]:
    import importlib

    from sklearn.base import BaseEstimator

    found: dict[str, type] = {}
    for module_name in SKLEARN_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", dir(module)):
            obj = getattr(module, name, None)
            if (isinstance(obj, type) and issubclass(obj, BaseEstimator) and not name.startswith("_")
                    and not inspect.isabstract(obj)):
                found.setdefault(name, obj)
    return tuple(sorted(found.items()))


@cache
def _typed(type_filter: str) -> frozenset[str]:
    from sklearn.base import ClassifierMixin, RegressorMixin

    mixin = ClassifierMixin if type_filter == "classifier" else RegressorMixin
    return frozenset(name for name, cls in _all() if issubclass(cls, mixin))


@cache
def _excluded() -> dict[str, str]:
    """Estimators of every kind that cannot be used, with the reason."""
    reasons = dict(UNSUPPORTED)
    for name, cls in _all():
        if _needs_arguments(cls):
            reasons.setdefault(name, "its constructor needs other estimators or arrays, which JSON cannot give")
    return reasons


@cache
def registry(kind: str) -> dict[str, type]:
    """Usable estimator classes of one kind (see :data:`ESTIMATOR_KINDS` or :data:`REDUCTION`), by class name."""
    if kind == REDUCTION:
        return dict(sorted({**registry("decomposition"), **registry("manifold")}.items()))
    if kind not in ESTIMATOR_KINDS:
        raise ValueError(f"unknown estimator kind {kind!r}; one of {', '.join(ESTIMATOR_KINDS)}")
    excluded = _excluded()
    found = {}
    for name, cls in _all():
        if name in excluded or not hasattr(cls, "fit"):
            continue
        if kind in ("classifier", "regressor"):
            ok = name in _typed(kind) and hasattr(cls, "predict")
        else:
            ok = cls.__module__.startswith(_MODULES[kind])
            if kind == "decomposition":
                ok = ok and hasattr(cls, "transform")
        if ok:
            found[name] = cls
    return dict(sorted(found.items()))


def umap_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("umap") is not None


def valid_names(kind: str) -> list[str]:
    """The names accepted for ``kind`` (UMAP, for reduction, marked when umap-learn is missing)."""
    names = list(registry(kind))
    if kind == REDUCTION:
        names.append("UMAP" if umap_available() else "UMAP (needs umap-learn)")
    return sorted(names, key=str.lower)


def _umap_class() -> type:
    try:
        from umap import UMAP
    except ImportError as exc:
        raise DependencyError(UMAP_HINT) from exc
    return UMAP


def resolve(kind: str, name: str) -> tuple[str, type]:
    """The canonical name and class of estimator ``name`` of ``kind``; a helpful :class:`EstimatorError` if none."""
    key = normalise(name)
    if not key:
        raise EstimatorError(f"No {_LABELS[kind]} given. Choose one of: {', '.join(valid_names(kind))}.")
    reg = registry(kind)
    target = ALIASES.get(kind, {}).get(key) or next((n for n in reg if normalise(n) == key), None)
    if target == "UMAP" or (kind == REDUCTION and key == "umap"):
        return "UMAP", _umap_class()
    if target in reg:
        return target, reg[target]
    raise EstimatorError(_unknown_message(kind, name, key))


def _unknown_message(kind: str, name: str, key: str) -> str:
    label = _LABELS[kind]
    for other, reason in _excluded().items():
        if normalise(other) == key:
            return (f"{other} cannot be used as a {label}: {reason}. Choose one of: "
                    f"{', '.join(valid_names(kind))}.")
    for other_kind in (*ESTIMATOR_KINDS, REDUCTION):
        if other_kind != kind and not (kind == REDUCTION and other_kind in ("decomposition", "manifold")):
            match = next((n for n in registry(other_kind) if normalise(n) == key), None)
            if match:
                return (f"{match} is a {_LABELS[other_kind]}, not a {label}. Choose one of: "
                        f"{', '.join(valid_names(kind))}.")
    candidates = {normalise(n): n for n in registry(kind)}
    candidates.update({alias: target for alias, target in ALIASES.get(kind, {}).items()})
    close = sorted({candidates[c] for c in difflib.get_close_matches(key, list(candidates), n=3, cutoff=0.6)})
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return (f"Unknown {label} {name!r}.{hint} Choose one of these names (case does not matter): "
            f"{', '.join(valid_names(kind))}.")


def parse_kwargs(text: str | dict | None) -> dict[str, Any]:
    """Keyword arguments from a JSON object (``""``/None: none). Raises :class:`EstimatorError` with the position."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}
    if isinstance(text, dict):
        return dict(text)
    example = 'e.g. {"n_estimators": 200, "max_depth": null} (names and strings in double quotes, null, true, false)'
    try:
        value = json.loads(str(text))
    except json.JSONDecodeError as exc:
        raise EstimatorError(
            f"The keyword arguments are not valid JSON ({exc.msg} at character {exc.pos + 1}). Write a JSON object, "
            f"{example}."
        ) from exc
    if not isinstance(value, dict):
        raise EstimatorError(f"The keyword arguments must be a JSON object, {example}; got {text!r}.")
    return value


def accepted_params(cls: type) -> list[str]:
    """The constructor parameters of an estimator class."""
    getter = getattr(cls, "_get_param_names", None)
    if callable(getter):
        return list(getter())
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def make_estimator(kind: str, name: str, kwargs: str | dict | None = None, *, seed: int | None = None,
                   size: tuple[int, tuple[str, ...]] | None = None) -> BuiltEstimator:
    """Build estimator ``name`` of ``kind`` with JSON ``kwargs``, checked before anything is fitted.

    Args:
        seed: given as ``random_state`` when the estimator has that parameter (and the kwargs do not set it).
        size: ``(value, parameter names)``: the number of components or clusters, given to the first of the names
            the estimator has, unless the kwargs set it (e.g. ``(8, ("n_clusters", "n_components"))``).
    """
    canonical, cls = resolve(kind, name)
    given = parse_kwargs(kwargs)
    accepted = accepted_params(cls)
    rejected = [k for k in given if k not in accepted]
    if rejected:
        hints = []
        for k in rejected:
            close = difflib.get_close_matches(k, accepted, n=1)
            hints.append(f"{k} (did you mean {close[0]}?)" if close else k)
        raise EstimatorError(
            f"{canonical} does not accept the keyword argument(s) {', '.join(hints)}. Its parameters are: "
            f"{', '.join(sorted(accepted))}."
        )
    params: dict[str, Any] = {}
    size_param = None
    if size is not None:
        size_param = next((p for p in size[1] if p in accepted), None)
        if size_param and size_param not in given:
            params[size_param] = int(size[0])
    if seed is not None and "random_state" in accepted and "random_state" not in given:
        params["random_state"] = int(seed)
    params.update({k: v for k, v in DEFAULTS.get(canonical, {}).items() if k in accepted and k not in given})
    params.update(given)
    try:
        estimator = cls(**params)
        validate = getattr(estimator, "_validate_params", None)
        if callable(validate) and hasattr(estimator, "_parameter_constraints"):  # UMAP has none: it checks in fit
            validate()
    except (TypeError, ValueError) as exc:
        raise EstimatorError(f"{canonical} rejects its arguments: {exc}") from exc
    return BuiltEstimator(estimator, canonical, params, size_param)


def fit_failure(built: BuiltEstimator, pixels: int, error: Exception, standardize: bool) -> EstimatorError:
    """The error to raise when ``built`` could not be fitted on a sample of ``pixels``: scikit-learn's reason,
    and what to change when the cause is known (methods such as NMF need non-negative input, which standardised
    bands are not)."""
    text = str(error)
    hint = ""
    if "n_samples" in text or "n_clusters" in text:
        hint = (f" The sample holds only {pixels} pixels: lower the number of clusters or components below that, or "
                "choose a raster or extent with more valid pixels.")
    elif "negative" in text.lower():
        hint = (" Untick \"Standardise bands\" (standardised bands are negative where below their mean), and use "
                "bands without negative values." if standardize else
                " This method needs non-negative input: choose bands without negative values, or another method.")
    return EstimatorError(f"{built.name} could not be fitted on the sample of {pixels} pixels: {text.rstrip('.')}."
                          f"{hint}")
