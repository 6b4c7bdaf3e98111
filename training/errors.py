"""Errors of the training-data steps (messages say what to change)."""

from __future__ import annotations

from ..tiling.errors import DeepRasterError


class TrainingDataError(DeepRasterError):
    """The labels, the chip settings or the split cannot give usable training data."""


class ChipFolderError(DeepRasterError):
    """A folder of chips (ours or Esri's Classified_Tiles) cannot be read."""
