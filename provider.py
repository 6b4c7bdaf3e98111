"""The Deep Raster Processing provider: its id, name, icon and algorithms."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms.base import ICON
from .algorithms.classify_pixels import ClassifyPixelsAlgorithm


class DeepRasterProvider(QgsProcessingProvider):
    """Registers the algorithms; heavy libraries (torch) are imported only when an algorithm runs."""

    def id(self) -> str:
        return "deepraster"

    def name(self) -> str:
        return "Deep Raster"

    def longName(self) -> str:  # noqa: N802 (QGIS API)
        return "Deep Raster: deep learning on satellite and aerial imagery"

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802 (QGIS API)
        return ["tif"]

    def loadAlgorithms(self) -> None:  # noqa: N802 (QGIS API)
        for algorithm in (ClassifyPixelsAlgorithm(),):
            self.addAlgorithm(algorithm)
