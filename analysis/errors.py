"""Errors of the scikit-learn analysis steps (estimators, training data, saved models)."""

from __future__ import annotations

from ..tiling.errors import DeepRasterError


class EstimatorError(DeepRasterError):
    """An estimator name is unknown, its keyword arguments are rejected, or it cannot be fitted to the data."""


class TrainingDataError(DeepRasterError):
    """Reference samples cannot be used as given (too few, a class with one sample, missing labels, ...)."""


class ModelFileError(DeepRasterError):
    """A saved model is missing, not trusted, damaged, or does not fit the raster it is applied to."""


class EvaluationError(DeepRasterError):
    """A class map cannot be evaluated against the reference as given (no overlap, no reference pixel, a class
    field or class names that do not fit the class raster)."""


class ChangeInputError(DeepRasterError):
    """Two rasters cannot be compared for change: no overlap, no common grid, different band counts, a threshold
    out of range."""
