"""What every Deep Raster algorithm shares: naming, help, the feedback adapter, dependency checks and the
translation of core errors into ``QgsProcessingException``."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence

from qgis.core import QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingFeedback
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..tiling.engine import Callbacks
from ..tiling.errors import DeepRasterError
from ..tiling.reader import RasterSource

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

    def run_algorithm(self, parameters, context, feedback) -> dict:
        """The algorithm itself; raise :class:`DeepRasterError` for anything the user can fix."""
        raise NotImplementedError


def callbacks_for(feedback: QgsProcessingFeedback) -> Callbacks:
    """Core callbacks that report to a Processing feedback object (progress in percent, cancel, messages)."""
    return Callbacks(progress=lambda fraction: feedback.setProgress(100.0 * fraction),
                     is_cancelled=feedback.isCanceled, info=feedback.pushInfo)
