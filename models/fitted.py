"""A fitted analysis model: a scikit-learn object and what is needed to apply it to pixels and to describe it.

Every analysis step ends in one plain scikit-learn object applied pixel by pixel with ``transform`` or ``predict``:
a ``Pipeline`` (optional ``StandardScaler``, then the estimator). Methods that cannot be applied to new pixels
(t-SNE, MDS, spectral embedding; DBSCAN, HDBSCAN, OPTICS, agglomerative and spectral clustering) end in a
nearest-neighbour model fitted on the sample instead (see :mod:`models.reduction` and :mod:`models.clustering`),
so a saved model never needs plugin classes to be unpickled.

Class rasters: ``classes[i]`` is the class written for predicted code ``i`` (value, name, colour); values fit in
uint8 (nodata 255) or else uint16 (nodata 65535). Continuous outputs are float32 with NaN as nodata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..tiling.outputs import ClassInfo
from ..tiling.pixelwise import PixelFunction, PixelOutput
from .ml_errors import ModelFileError

KINDS = ("reduction", "cluster", "classifier", "regressor")
UINT8_NODATA = 255
UINT16_NODATA = 65535
MAX_CATEGORY_NAMES = 4096


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

        def classes_of(pixels: np.ndarray) -> np.ndarray:
            codes = np.asarray(apply(pixels)).astype(np.int64).ravel()
            out = np.full(codes.shape, noise_value, dtype=np.int64)
            known = (codes >= 0) & (codes < lut.size)
            out[known] = lut[codes[known]]
            return out.astype(dtype)[:, None]

        if not probabilities:
            return classes_of
        if not self.has_probabilities():
            raise ModelFileError(f"{self.name} gives no class probabilities; leave the probability output empty.")
        proba = self.estimator.predict_proba

        def with_probabilities(pixels: np.ndarray) -> list[np.ndarray]:
            p = np.asarray(proba(pixels), np.float32)
            return [classes_of(pixels), p]

        return with_probabilities
