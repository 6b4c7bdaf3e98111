"""What every Deep Raster algorithm shares: naming, help, the feedback adapter, dependency checks and the
translation of core errors into ``QgsProcessingException``."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..tiling.callbacks import Callbacks
from ..tiling.errors import DeepRasterError, RasterInputError
from ..tiling.source import RasterSource
from ..tiling.window import Window

ICON = os.path.join(os.path.dirname(os.path.dirname(__file__)), "icons", "deepraster.svg")

# import name → pip requirement, for the packages the deep-learning algorithms need
DEEP_LEARNING_PACKAGES = {"torch": "torch", "segmentation_models_pytorch": "segmentation-models-pytorch",
                          "safetensors": "safetensors"}


def missing_packages(packages: dict[str, str]) -> list[str]:
    """pip names of the packages in ``packages`` that cannot be imported here."""
    return [pip for module, pip in packages.items() if importlib.util.find_spec(module) is None]


def install_hint(pip_names: Sequence[str]) -> str:
    """A message naming missing packages and the command that installs them into QGIS's own Python."""
    python = sys.executable if os.path.basename(sys.executable).lower().startswith("python") else "python3"
    names = " ".join(f'"{n}"' for n in pip_names)
    return (
        f"Missing Python package(s): {', '.join(pip_names)}. Install them into the Python that QGIS uses, then "
        f"restart QGIS: {python} -m pip install {names} \"numpy<2\" (on Windows, run it in the OSGeo4W Shell; "
        "keep numpy below 2 so GDAL and QGIS keep working)."
    )


class DeepRasterAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses define the QGIS-facing names, parameters and ``run_algorithm``.

    The provider registers every subclass defined in a module of ``algorithms/``; set ``abstract = True`` in the
    class body of an intermediate base class to keep it out.
    """

    abstract = True
    INPUT = "INPUT"
    EXTENT = "EXTENT"

    required_packages: dict[str, str] = DEEP_LEARNING_PACKAGES

    def tr(self, text: str) -> str:
        return QCoreApplication.translate(type(self).__name__, text)

    def createInstance(self):  # noqa: N802 (QGIS API)
        return type(self)()

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def canExecute(self):  # noqa: N802 (QGIS API)
        missing = missing_packages(self.required_packages)
        return (False, install_hint(missing)) if missing else (True, "")

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS API)
        """QGIS's checks, with a clearer message when a raster input names a file that is not a raster."""
        ok, message = super().checkParameterValues(parameters, context)
        if ok:
            return ok, message
        for definition in self.parameterDefinitions():
            value = parameters.get(definition.name())
            if definition.type() == "raster" and isinstance(value, str) and os.path.isfile(value):
                try:
                    RasterSource.open(value)
                except DeepRasterError as exc:
                    return False, str(exc)
        return ok, message

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        feedback = feedback or QgsProcessingFeedback()
        missing = missing_packages(self.required_packages)
        if missing:
            raise QgsProcessingException(install_hint(missing))
        try:
            return self.run_algorithm(parameters, context, feedback)
        except DeepRasterError as exc:
            raise QgsProcessingException(str(exc)) from exc
        except MemoryError as exc:
            raise QgsProcessingException(
                "Out of memory. Lower the batch size or the tile size in the advanced parameters."
            ) from exc

    def input_source(self, parameters, context) -> tuple[object, RasterSource, Window | None]:
        """The input layer, its raster and the pixel window of the processing extent (None: the whole raster)."""
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise RasterInputError("The input raster could not be loaded. Choose a raster layer or file GDAL can read.")
        source = RasterSource.open(layer.source())
        region = None
        if parameters.get(self.EXTENT):
            extent = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            region = source.window_for_bounds(extent.xMinimum(), extent.yMinimum(), extent.xMaximum(),
                                              extent.yMaximum())
        return layer, source, region

    def run_algorithm(self, parameters, context, feedback) -> dict:
        """The algorithm itself; raise :class:`DeepRasterError` for anything the user can fix."""
        raise NotImplementedError


class TiledModelAlgorithm(DeepRasterAlgorithm):
    """What the algorithms that run a network over tiles share: the input raster and its processing extent, and
    the advanced tiling and compute parameters (tile size, overlap, batch size, device, half precision)."""

    abstract = True
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    DEVICE = "DEVICE"
    HALF = "HALF"
    DEVICES = ("auto", "cpu", "cuda")

    def tiling_parameters(self, tile_default: str, overlap_default: str) -> list[QgsProcessingParameterDefinition]:
        """The tiling and compute parameters; 0 tile size and −1 overlap mean the defaults named in the labels."""
        return [
            QgsProcessingParameterNumber(self.TILE_SIZE, self.tr(f"Tile size in pixels (0: {tile_default})"),
                                         QgsProcessingParameterNumber.Integer, 0, minValue=0, maxValue=8192),
            QgsProcessingParameterNumber(self.OVERLAP, self.tr(f"Tile overlap in pixels (-1: {overlap_default})"),
                                         QgsProcessingParameterNumber.Integer, -1, minValue=-1, maxValue=4096),
            QgsProcessingParameterNumber(self.BATCH_SIZE, self.tr("Batch size (tiles per model call)"),
                                         QgsProcessingParameterNumber.Integer, 4, minValue=1, maxValue=1024),
            QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), options=list(self.DEVICES), defaultValue=0),
            QgsProcessingParameterBoolean(self.HALF, self.tr("Half precision on GPU (float16)"), False),
        ]

    def add_advanced(self, params: list[QgsProcessingParameterDefinition]) -> None:
        """Add parameters under the dialog's "Advanced parameters"."""
        for param in params:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)

    def tiling_values(self, parameters, context) -> dict:
        """tile_size, overlap (None: the default), batch_size, device and half, as request fields."""
        overlap = self.parameterAsInt(parameters, self.OVERLAP, context)
        return {
            "tile_size": self.parameterAsInt(parameters, self.TILE_SIZE, context) or None,
            "overlap": None if overlap < 0 else overlap,
            "batch_size": self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            "device": self.DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            "half": self.parameterAsBool(parameters, self.HALF, context),
        }


def callbacks_for(feedback: QgsProcessingFeedback) -> Callbacks:
    """Core callbacks that report to a Processing feedback object (progress in percent, cancel, messages)."""
    return Callbacks(progress=lambda fraction: feedback.setProgress(100.0 * fraction),
                     is_cancelled=feedback.isCanceled, info=feedback.pushInfo,
                     warning=lambda message: feedback.reportError(message, fatalError=False),
                     stage=feedback.setProgressText)
