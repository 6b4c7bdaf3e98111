"""GDAL's auxiliary metadata files (PAM: the ``.aux.xml`` GDAL writes beside a raster) switched on or off for one
thread: off while QGIS loads a user's input (its statistics would land beside the input), on for the writer's own
outputs (a GeoTIFF's category names live only there)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from osgeo import gdal


@contextmanager
def pam_switched(enabled: bool = True) -> Iterator[None]:
    """GDAL's auxiliary metadata (PAM, the ``.aux.xml`` beside a file) switched on or off for the datasets this
    thread creates or opens meanwhile; GDAL decides when a dataset is created or opened.

    On (the default) for the writer's files: a GeoTIFF's category names live only there, and ``qgis_process`` runs
    switch PAM off for the whole process (so that loading the inputs leaves no ``.aux.xml`` beside them)."""
    previous = gdal.GetThreadLocalConfigOption("GDAL_PAM_ENABLED", None)
    gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", "YES" if enabled else "NO")
    try:
        yield
    finally:
        gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", previous)


@contextmanager
def no_aux_files() -> Iterator[None]:
    """Rasters opened by this thread meanwhile do not get a .aux.xml written beside them.

    QGIS computes band statistics when it loads a raster layer, and GDAL saves them in ``<file>.aux.xml`` (its
    persistent auxiliary metadata, PAM) when the file closes: a run would leave files beside the user's inputs.
    GDAL_PAM_ENABLED=NO, set for this thread only, keeps them in memory."""
    with pam_switched(False):
        yield
