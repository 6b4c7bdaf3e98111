"""The QGIS plugin object: registers the Processing provider when Processing starts, removes it on unload."""

from __future__ import annotations

from qgis.core import QgsApplication


class DeepRasterPlugin:
    """Adds the Deep Raster provider to the Processing registry (toolbox, Model Builder, qgis_process)."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS API)
        if self.provider is not None:  # QGIS may call both initProcessing and initGui
            return
        from .provider import DeepRasterProvider

        self.provider = DeepRasterProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 (QGIS API)
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
