"""Errors raised by the core (no QGIS here): one root class, specific subclasses.

Messages are written for the user: they say what is wrong and what to change. The Processing adapters in
``algorithms/`` turn every :class:`DeepRasterError` into a ``QgsProcessingException`` with the same text.
"""

from __future__ import annotations


class DeepRasterError(Exception):
    """Root of every error the plugin raises on purpose."""


class RasterInputError(DeepRasterError):
    """The input raster cannot be used as given (unreadable, band out of range, no valid pixel, ...)."""


class ExtentError(DeepRasterError):
    """The processing extent does not overlap the raster or is empty."""


class OutputError(DeepRasterError):
    """An output file cannot be written."""


class RunCancelled(DeepRasterError):
    """The user cancelled the run; outputs were removed."""


class DependencyError(DeepRasterError):
    """A Python package the algorithm needs is not installed in QGIS's Python."""
