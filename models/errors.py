"""Errors about model packages, their weights, encoders, and how a raster's bands map onto a model's inputs.

``ModelPackageError`` is the root of everything that goes wrong with a model: catching it catches a weights file
that cannot be read (:class:`WeightsError`) and an encoder that cannot be built (:class:`EncoderError`) too.
"""

from __future__ import annotations

from ..tiling.errors import DeepRasterError


class ModelPackageError(DeepRasterError):
    """A model package is missing, malformed, or its weights do not fit its description."""


class WeightsError(ModelPackageError):
    """A weights file cannot be read, holds no state dict, or is a pickle that may only be opened when trusted.

    ``needs_trust`` is True when the file is a whole pickled model: it can be opened, but only by the user's choice.
    """

    def __init__(self, message: str, needs_trust: bool = False) -> None:
        super().__init__(message)
        self.needs_trust = needs_trust


class EncoderError(ModelPackageError):
    """An encoder cannot be built or its weights do not fit it."""


class BandMappingError(DeepRasterError):
    """The raster's bands cannot be matched to the bands the model expects."""
