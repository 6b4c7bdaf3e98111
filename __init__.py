"""Deep Raster: deep learning on satellite and aerial imagery as QGIS Processing algorithms.

Importing this package must stay cheap and QGIS-free: the core (``tiling``, ``models``) is also used from plain
Python. QGIS calls :func:`classFactory` when it loads the plugin; the first thing it does is block the imports that
crash QGIS (``triton``, see ``algorithms/import_guard.py``), before anything can import torch; then it puts the
profile's ``python/deepraster-packages`` folder (filled by the installer, docs/installer.md) on ``sys.path``.

Importing it switches ONNX Runtime's usage telemetry off for the process (see ``tiling/onnx_session.py``), here on
the importing thread (QGIS's main thread) rather than later from a run's thread while others read the environment.
"""

from .tiling.onnx_session import telemetry_off

telemetry_off()


def classFactory(iface):  # noqa: N802 (name fixed by QGIS)
    """QGIS entry point: return the plugin object."""
    from .algorithms import import_guard

    import_guard.install()
    from qgis.core import QgsApplication

    from .installer.pip_target import activate

    activate(QgsApplication.qgisSettingsDirPath())  # packages from "Install deep-learning packages"
    from .plugin import DeepRasterPlugin

    return DeepRasterPlugin(iface)
