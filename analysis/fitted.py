"""A fitted analysis model: a scikit-learn object and what is needed to apply it to pixels and to describe it.

Every analysis step ends in one plain scikit-learn object applied pixel by pixel with ``transform`` or ``predict``:
a ``Pipeline`` (optional ``StandardScaler``, then the estimator). Methods that cannot be applied to new pixels
(t-SNE, MDS, spectral embedding; DBSCAN, HDBSCAN, OPTICS, agglomerative and spectral clustering) end in a
nearest-neighbour model fitted on the sample instead (see :mod:`models.reduction` and :mod:`models.clustering`),
so a saved model never needs plugin classes to be unpickled.

Class rasters: ``classes[i]`` is the class written for predicted code ``i`` (value, name, colour); values fit in
uint8 (nodata 255) or else uint16 (nodata 65535). Continuous outputs are float32 with NaN as nodata.

Class probabilities: when they are written too, the classes of scikit-learn classifiers whose ``predict`` is the
argmax of ``predict_proba`` (see :data:`ARGMAX_CLASSIFIERS`) are taken from the probabilities instead of calling
``predict`` as well, which would compute everything twice (a random forest's ``predict`` calls ``predict_proba``).
The class raster is the same as with ``predict``; other classifiers (SVC, whose probabilities come from a separate
calibration and may disagree with ``predict``) still call both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..tiling.outputs import ClassInfo
from ..tiling.pixelwise import PixelFunction, PixelOutput
from .errors import ModelFileError

MODEL_KINDS = ("reduction", "cluster", "classifier", "regressor")
UINT8_NODATA = 255
UINT16_NODATA = 65535
MAX_CATEGORY_NAMES = 4096

ARGMAX_CLASSIFIERS: dict[str, bool] = {
    # predict is classes_[argmax] of the very array predict_proba returns: identical, ties included
    "RandomForestClassifier": False, "ExtraTreesClassifier": False, "DecisionTreeClassifier": False,
    "ExtraTreeClassifier": False, "MLPClassifier": False, "KNeighborsClassifier": False,
    # predict is the argmax (binary: the sign) of scores that predict_proba maps monotonically to probabilities:
    # identical wherever the highest probability is clearly above the second; near ties are left to predict
    "GradientBoostingClassifier": True, "HistGradientBoostingClassifier": True, "LogisticRegression": True,
    "GaussianNB": True,
}
"""scikit-learn classifiers whose class is derived from ``predict_proba`` without calling ``predict``, and whether
near ties must still go to ``predict`` (KNeighborsClassifier: only with ``weights="uniform"``; with distance weights
its ``predict`` sums the weights in another order, so near ties go to ``predict`` too)."""
TIE_TOLERANCE = 1e-9
"""Pixels whose two highest probabilities differ by at most this are classified with ``predict`` (see above)."""


def class_raster_type(values: list[int] | tuple[int, ...]) -> tuple[type, int]:
    """dtype and nodata of a class raster holding ``values`` (0–254: uint8/255, up to 65534: uint16/65535)."""
    top = max(values) if values else 0
    if top <= UINT8_NODATA - 1:
        return np.uint8, UINT8_NODATA
    if top <= UINT16_NODATA - 1:
        return np.uint16, UINT16_NODATA
    raise ModelFileError(f"Class values go up to {top}; class rasters hold values 0–65534. Recode the classes.")


def class_output(path: str, classes: list[ClassInfo] | tuple[ClassInfo, ...], description: str) -> PixelOutput:
    """A one-band class raster with a colour table and category names."""
    values = [c.value for c in classes]
    dtype, nodata = class_raster_type(values)
    names: tuple[str, ...] = ()
    if values and max(values) < MAX_CATEGORY_NAMES:
        table = [""] * (max(values) + 1)
        for c in classes:
            table[c.value] = c.name
        names = tuple(table)
    return PixelOutput(path, 1, dtype, nodata, (description,), {c.value: c.rgb for c in classes}, names)


@dataclass
class FittedModel:
    """A fitted model ready to map pixels.

    Attributes:
        kind: "reduction", "cluster", "classifier" or "regressor".
        name: the estimator's name (e.g. "PCA", "TSNE", "RandomForestClassifier").
        estimator: the fitted scikit-learn object applied with ``method``.
        method: "transform" or "predict".
        band_names: names of the input bands it was fitted on, in order (its feature count is their number).
        outputs: band descriptions of the continuous output (reduction components, regression target).
        classes: cluster or classifier classes; ``classes[i]`` is written for predicted code ``i``.
        noise: the class written for the noise label −1 of density clusterings (None: noise becomes nodata).
        params: how it was made (arguments, seed, sample size ...), JSON-serialisable.
        notes: results worth reporting (explained variance, out-of-sample rule ...), JSON-serialisable.
    """

    kind: str
    name: str
    estimator: Any
    method: str
    band_names: tuple[str, ...]
    outputs: tuple[str, ...] = ()
    classes: tuple[ClassInfo, ...] = ()
    noise: ClassInfo | None = None
    params: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return len(self.band_names)

    @property
    def all_classes(self) -> tuple[ClassInfo, ...]:
        """The classes written to the class raster (noise included)."""
        return self.classes + ((self.noise,) if self.noise else ())

    def main_output(self, path: str) -> PixelOutput:
        """The raster this model writes: class raster (cluster, classifier) or float32 bands."""
        if self.kind in ("cluster", "classifier"):
            return class_output(path, self.all_classes, "cluster" if self.kind == "cluster" else "class")
        return PixelOutput(path, len(self.outputs), np.float32, float("nan"), self.outputs)

    def probability_output(self, path: str) -> PixelOutput:
        """One float32 band per class, 0–1 (classifiers with ``predict_proba`` only)."""
        return PixelOutput(path, len(self.classes), np.float32, float("nan"),
                           tuple(f"probability of {c.name}" for c in self.classes))

    def has_probabilities(self) -> bool:
        return self.kind == "classifier" and hasattr(self.estimator, "predict_proba")

    def pixel_function(self, probabilities: bool = False) -> PixelFunction:
        """``(pixels, bands)`` → the main output's values (and the class probabilities when asked)."""
        apply = getattr(self.estimator, self.method)
        if self.kind in ("reduction", "regressor"):
            return lambda pixels: np.asarray(apply(pixels), np.float32).reshape(len(pixels), -1)
        dtype, nodata = class_raster_type([c.value for c in self.all_classes])
        lut = np.array([c.value for c in self.classes], dtype=np.int64)
        noise_value = self.noise.value if self.noise else nodata

        def predicted_codes(pixels: np.ndarray) -> np.ndarray:
            return np.asarray(apply(pixels)).astype(np.int64).ravel()

        def class_values(codes: np.ndarray) -> np.ndarray:
            out = np.full(codes.shape, noise_value, dtype=np.int64)
            known = (codes >= 0) & (codes < lut.size)
            out[known] = lut[codes[known]]
            return out.astype(dtype)[:, None]

        if not probabilities:
            return lambda pixels: class_values(predicted_codes(pixels))
        if not self.has_probabilities():
            raise ModelFileError(f"{self.name} gives no class probabilities; leave the probability output empty.")
        proba = self.estimator.predict_proba
        rule = argmax_rule(self.estimator)

        def with_probabilities(pixels: np.ndarray) -> list[np.ndarray]:
            p = np.asarray(proba(pixels))
            if rule is None:
                codes = predicted_codes(pixels)
            else:
                codes, unsure = rule.codes(p)
                if unsure.any():
                    codes[unsure] = predicted_codes(pixels[unsure])
            return [class_values(codes), p.astype(np.float32)]

        return with_probabilities


@dataclass(frozen=True)
class ArgmaxRule:
    """How ``predict`` follows from ``predict_proba``: ``labels[argmax]`` (``labels``: the codes ``predict`` returns,
    in the order of the probability columns); with ``near_ties``, pixels without a clear highest probability are
    left to ``predict``."""

    labels: np.ndarray
    near_ties: bool

    def codes(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes from probabilities ``(pixels, classes)`` and the mask of pixels ``predict`` must decide."""
        codes = self.labels[np.argmax(p, axis=1)]
        if not self.near_ties or p.shape[1] < 2:
            return codes, np.zeros(len(p), dtype=bool)
        top = np.partition(p, -2, axis=1)[:, -2:]
        return codes, ~(top[:, 1] - top[:, 0] > TIE_TOLERANCE)  # NaN rows too


def argmax_rule(estimator: Any) -> ArgmaxRule | None:
    """The :class:`ArgmaxRule` of ``estimator`` (a classifier, a Pipeline ending in one, or a wrapper whose
    ``predict`` returns positions in ``classes_``, marked ``predicts_positions``); None when ``predict`` is not
    known to be the argmax of ``predict_proba`` (then both are called)."""
    from sklearn.pipeline import Pipeline

    positions = bool(getattr(estimator, "predicts_positions", False))
    if positions:
        estimator = estimator.estimator
    while isinstance(estimator, Pipeline):  # Pipeline.predict/predict_proba are those of the last step
        estimator = estimator.steps[-1][1]
    cls = type(estimator)
    if not cls.__module__.startswith("sklearn.") or cls.__name__ not in ARGMAX_CLASSIFIERS:
        return None  # subclasses elsewhere may override predict
    classes = getattr(estimator, "classes_", None)
    if not isinstance(classes, np.ndarray) or classes.ndim != 1:
        return None
    if cls.__name__ == "MLPClassifier":  # its n_outputs_ counts output units
        if getattr(getattr(estimator, "_label_binarizer", None), "y_type_", "") not in ("binary", "multiclass"):
            return None  # multi-label: independent thresholds
    elif getattr(estimator, "n_outputs_", 1) != 1:
        return None  # multi-output: predict_proba gives a list
    near_ties = ARGMAX_CLASSIFIERS[cls.__name__]
    if cls.__name__ == "KNeighborsClassifier":
        near_ties = estimator.weights != "uniform"
    if positions:
        try:
            ordered = bool(np.all(classes[1:] > classes[:-1]))
        except TypeError:
            ordered = False
        return ArgmaxRule(np.arange(len(classes), dtype=np.int64), near_ties) if ordered else None
    if classes.dtype.kind not in "iuf" or not np.all(np.isfinite(classes) & (classes == np.round(classes))):
        return None  # predict's labels are not codes
    return ArgmaxRule(classes.astype(np.int64), near_ties)
