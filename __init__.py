"""Deep Raster: deep learning on satellite and aerial imagery as QGIS Processing algorithms.

Importing this package must stay cheap and QGIS-free: the core (``tiling``, ``models``) is also used from plain
Python. QGIS calls :func:`classFactory` when it loads the plugin.
"""


def classFactory(iface):  # noqa: N802 (name fixed by QGIS)
    """QGIS entry point: return the plugin object."""
    from .plugin import DeepRasterPlugin

    return DeepRasterPlugin(iface)
