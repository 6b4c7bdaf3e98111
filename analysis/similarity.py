"""Cosine similarity of every pixel's feature vector to the mean vector of each reference class.

``similarity(x, c) = x·m_c / (|x| |m_c|)`` in −1…1, where ``m_c`` is the mean of the reference pixels of class c.
Optionally features are centred first (the raster's mean vector, from a sample, is subtracted from pixels and
means): for all-positive inputs such as reflectances this spreads similarities over −1…1 instead of bunching them
near 1. A pixel whose (centred) vector is zero has no direction: its similarity is NaN (nodata).

With a threshold, a class map gives each pixel the class of highest similarity when that similarity is at least
the threshold: class ``i`` (in the order of :attr:`Prototypes.names`) is value ``i + 1``; value 0 is "no match".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..tiling.outputs import ClassInfo
from ..tiling.pixelwise import PixelFunction
from .errors import TrainingDataError
from .fitted import UINT8_NODATA, class_raster_type
from .palette import NO_MATCH_RGB, category_colours


@dataclass(frozen=True)
class Prototypes:
    """Mean feature vector per reference class."""

    names: tuple[str, ...]
    vectors: np.ndarray  # (classes, bands) float64
    counts: tuple[int, ...]
    center: np.ndarray | None = None  # (bands,) subtracted before comparing, or None

    def classes(self) -> tuple[ClassInfo, ...]:
        """Classes of the thresholded map: "no match" (0), then one per prototype (1, 2, ...)."""
        colours = category_colours(len(self.names))
        return (ClassInfo(0, "no match", NO_MATCH_RGB),
                *(ClassInfo(i + 1, n, colours[i]) for i, n in enumerate(self.names)))


def class_prototypes(values: np.ndarray, labels: Sequence[str], center: np.ndarray | None = None) -> Prototypes:
    """Mean vectors of ``values`` ``(points, bands)`` grouped by ``labels`` (classes sorted by name)."""
    labels = np.asarray([str(v) for v in labels], dtype=object)
    if len(labels) == 0:
        raise TrainingDataError("No reference pixel to build a similarity from.")
    names = tuple(sorted(set(labels.tolist())))
    vectors = np.stack([values[labels == n].astype(np.float64).mean(axis=0) for n in names])
    counts = tuple(int((labels == n).sum()) for n in names)
    if center is not None:
        center = np.asarray(center, np.float64)
        vectors = vectors - center
    zero = [n for n, v in zip(names, vectors, strict=True) if not np.linalg.norm(v) > 0]
    if zero:
        raise TrainingDataError(
            f"The mean vector of class(es) {', '.join(zero)} is zero, so it has no direction to compare with. "
            "Choose other reference points or turn off centring."
        )
    return Prototypes(names, vectors, counts, center)


def cosine_similarity(pixels: np.ndarray, prototypes: Prototypes) -> np.ndarray:
    """``(pixels, classes)`` float32 cosine similarities (NaN for pixels with a zero vector)."""
    x = pixels.astype(np.float64)
    if prototypes.center is not None:
        x = x - prototypes.center
    norms = np.linalg.norm(x, axis=1)
    units = prototypes.vectors / np.linalg.norm(prototypes.vectors, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = (x @ units.T) / norms[:, None]
    sim[norms == 0] = np.nan
    return np.clip(sim, -1.0, 1.0).astype(np.float32)


def threshold_classes(similarity: np.ndarray, threshold: float) -> np.ndarray:
    """Class values ``(pixels, 1)``: 1 + index of the most similar class if ≥ ``threshold``, else 0; NaN → nodata."""
    dtype, _ = class_raster_type([similarity.shape[1]])
    undefined = np.isnan(similarity).all(axis=1)
    best = np.argmax(np.nan_to_num(similarity, nan=-np.inf), axis=1)
    top = similarity[np.arange(len(similarity)), best]
    out = np.where(top >= threshold, best + 1, 0).astype(np.int64)
    out[undefined] = UINT8_NODATA if dtype == np.uint8 else np.iinfo(np.uint16).max
    return out.astype(dtype)[:, None]


def similarity_function(prototypes: Prototypes, threshold: float | None = None) -> PixelFunction:
    """Pixel function giving the similarities, and the thresholded classes when ``threshold`` is set."""
    if threshold is None:
        return lambda pixels: cosine_similarity(pixels, prototypes)

    def both(pixels: np.ndarray) -> list[np.ndarray]:
        sim = cosine_similarity(pixels, prototypes)
        return [sim, threshold_classes(sim, threshold)]

    return both
