"""The Deep Raster Processing provider: its id, name, icon and algorithms.

Algorithms are found, not listed: every concrete :class:`~algorithms.base.DeepRasterAlgorithm` subclass defined in a
module of ``algorithms/`` is registered. A module that fails to import is reported in the QGIS message log and
skipped, so one broken algorithm never takes the provider (or QGIS's start-up) down with it.

Before any algorithm module is imported, ``algorithms/import_guard.py`` blocks the libraries that crash QGIS
(``triton``: its LLVM clashes with the Mesa libLLVM that QGIS desktop loads for OpenGL).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

from qgis.core import Qgis, QgsMessageLog, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from . import algorithms
from .algorithms import import_guard
from .algorithms.base import ICON, DeepRasterAlgorithm

SUPPORT_MODULES = {"base", "styling", "import_guard"}


def discover_algorithms() -> Iterator[DeepRasterAlgorithm]:
    """One instance of each algorithm class defined in the modules of ``algorithms/``, in module-name order."""
    import_guard.install()
    for info in sorted(pkgutil.iter_modules(algorithms.__path__), key=lambda i: i.name):
        if info.name in SUPPORT_MODULES or info.name.startswith("_"):
            continue
        name = f"{algorithms.__name__}.{info.name}"
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 (logged with its cause; the other algorithms still load)
            QgsMessageLog.logMessage(f"Cannot load {name}: {type(exc).__name__}: {exc}", "Deep Raster",
                                     Qgis.Warning)
            continue
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, DeepRasterAlgorithm) and obj.__module__ == name
                    and not obj.__dict__.get("abstract", False)):
                yield obj()


class DeepRasterProvider(QgsProcessingProvider):
    """Registers the algorithms; heavy libraries (torch, sklearn) are imported only when an algorithm runs."""

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
        for algorithm in discover_algorithms():
            self.addAlgorithm(algorithm)
