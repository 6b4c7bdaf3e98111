"""Errors about model packages and how a raster's bands map onto a model's inputs."""

from __future__ import annotations

from ..tiling.errors import DeepRasterError


class ModelPackageError(DeepRasterError):
    """A model package is missing, malformed, or its weights do not fit its description."""


class BandMappingError(DeepRasterError):
    """The raster's bands cannot be matched to the bands the model expects."""
