"""The QGIS plugin object: registers the Processing provider when Processing starts, adds the plugin menu entry
"Install deep-learning packages…", removes both on unload."""

from __future__ import annotations

from qgis.core import QgsApplication

from .algorithms import import_guard

MENU = "&Deep Raster"
INSTALLER_ID = "deepraster:install_packages"


class DeepRasterPlugin:
    """Adds the Deep Raster provider to the Processing registry (toolbox, Model Builder, qgis_process)."""

    def __init__(self, iface) -> None:
        import_guard.install()  # already done by classFactory; again for code that builds the plugin directly
        self.iface = iface
        self.provider = None
        self.install_action = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS API)
        if self.provider is not None:  # QGIS may call both initProcessing and initGui
            return
        from .provider import DeepRasterProvider

        self.provider = DeepRasterProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 (QGIS API)
        self.initProcessing()
        if self.iface is None or self.install_action is not None:  # headless, or already added
            return
        from qgis.PyQt.QtGui import QIcon
        from qgis.PyQt.QtWidgets import QAction

        from .algorithms.base import ICON

        self.install_action = QAction(QIcon(ICON), "Install deep-learning packages…", self.iface.mainWindow())
        self.install_action.setObjectName("deepraster_install_packages")
        self.install_action.setToolTip("Install PyTorch and the other packages Deep Raster needs, with QGIS's Python")
        self.install_action.triggered.connect(self.open_installer)
        self.iface.addPluginToMenu(MENU, self.install_action)

    def open_installer(self) -> None:
        """Open the "Install deep-learning packages" algorithm's dialog."""
        import processing

        processing.execAlgorithmDialog(INSTALLER_ID, {})

    def unload(self) -> None:
        if self.install_action is not None:
            self.iface.removePluginMenu(MENU, self.install_action)
            self.install_action.deleteLater()
            self.install_action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
