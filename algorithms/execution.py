"""The execution backend of the tiled algorithms: advanced parameters whose defaults are plugin-wide settings.

The settings live in the QGIS profile under ``deepraster/execution/`` (Settings ▸ Options ▸ Advanced Settings
Editor): ``backend`` (``process``, ``local`` or ``address``), ``workers``, ``threads``, ``memory_limit``,
``address`` and ``worker_wait_s`` (how long a run on a scheduler goes on without any worker; default 600). A
dialog or ``qgis_process`` run that does not set the parameters uses them.
"""

from __future__ import annotations

from collections.abc import Callable

from qgis.core import (
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsSettings,
)

from ..scale.backend import BACKENDS, Backend
from ..tiling.pixelwise import PixelRunStats, map_pixels

EXECUTION = "EXECUTION"
DASK_WORKERS = "DASK_WORKERS"
DASK_THREADS = "DASK_THREADS"
DASK_MEMORY = "DASK_MEMORY"
DASK_ADDRESS = "DASK_ADDRESS"
OPTIONS = ("This process", "Dask local cluster (this computer)", "Dask scheduler address")
SETTINGS_PREFIX = "deepraster/execution/"


def setting(name: str, default):
    """The plugin-wide execution setting ``name`` (``default`` when unset or unreadable)."""
    value = QgsSettings().value(SETTINGS_PREFIX + name, default)
    try:
        return type(default)(value)
    except (TypeError, ValueError):
        return default


def execution_parameters(tr) -> list[QgsProcessingParameterDefinition]:
    """The backend parameters, with the plugin-wide settings as defaults (``tr`` translates labels)."""
    kind = setting("backend", "process")
    return [
        QgsProcessingParameterEnum(EXECUTION, tr("Run on"), options=list(OPTIONS),
                                   defaultValue=BACKENDS.index(kind) if kind in BACKENDS else 0),
        QgsProcessingParameterNumber(DASK_WORKERS, tr("Dask local workers (0: one per core ÷ threads)"),
                                     QgsProcessingParameterNumber.Integer, setting("workers", 0), minValue=0,
                                     maxValue=512),
        QgsProcessingParameterNumber(DASK_THREADS, tr("Dask: model threads per worker"),
                                     QgsProcessingParameterNumber.Integer, setting("threads", 1), minValue=1,
                                     maxValue=256),
        QgsProcessingParameterString(DASK_MEMORY, tr("Dask local: memory limit per worker (e.g. 4GB, auto)"),
                                     setting("memory_limit", "auto")),
        QgsProcessingParameterString(DASK_ADDRESS, tr("Dask scheduler address (tcp://host:8786)"),
                                     setting("address", ""), optional=True),
    ]


def backend_value(alg, parameters, context) -> Backend:
    """The :class:`~scale.backend.Backend` the parameters ask for."""
    return Backend(kind=BACKENDS[alg.parameterAsEnum(parameters, EXECUTION, context)],
                   workers=alg.parameterAsInt(parameters, DASK_WORKERS, context),
                   threads=alg.parameterAsInt(parameters, DASK_THREADS, context),
                   memory_limit=alg.parameterAsString(parameters, DASK_MEMORY, context).strip() or "auto",
                   address=alg.parameterAsString(parameters, DASK_ADDRESS, context).strip(),
                   worker_wait_s=setting("worker_wait_s", 600.0))


def pixel_mapper(backend: Backend) -> Callable[..., PixelRunStats]:
    """What maps pixels on ``backend``: :func:`~tiling.pixelwise.map_pixels` in this process, or its drop-in on the
    Dask cluster (:func:`~scale.pixels.cluster_mapper`)."""
    if not backend.distributed:
        return map_pixels
    from ..scale.pixels import cluster_mapper

    return cluster_mapper(backend)
