"""Making an ONNX Runtime session, and keeping the graph ONNX Runtime optimised for this CPU.

The optimised graph is kept as a folder (see :mod:`models.onnx_optimized` for its name and place): ``model.onnx``
(the graph) and ``model.weights`` (its initializers, stored apart). ONNX Runtime maps such an external weights file
into memory instead of reading it into new memory: making a session of the ukis-csmask U-Net this way takes 0.05 s
instead of 0.13 s in a new process (40 000 page faults fewer), computes the same bits, and processes on one computer
share the weights' pages. The folder is written under a temporary name and renamed into place in one step, so a
reader never sees half of it and two writers never mix their files; a folder that cannot be loaded is moved aside
and made again.

ONNX Runtime is imported through :func:`import_onnxruntime` only: the official builds (Linux, macOS, Windows)
record usage events, keep a device identifier in the user's cache and send both to Microsoft, unless
``ORT_DISABLE_TELEMETRY`` is set before ONNX Runtime starts in the process. Deep Raster sets it when the package is
imported (``__init__.py``: in QGIS on the main thread, at start-up, before any thread of a run could read the
environment), and again here for code that imports these modules in other ways; a user who sets it to ``0`` keeps
the telemetry on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from .errors import DeepRasterError
from .removal import remove_aside

GRAPH_NAME = "model.onnx"
"""The optimised graph in its folder."""
WEIGHTS_NAME = "model.weights"
"""Its initializers, beside it (referenced by name from the graph)."""
TELEMETRY_SWITCH = "ORT_DISABLE_TELEMETRY"
"""ONNX Runtime's opt-out of its usage telemetry (read once, when it starts in a process)."""
EXTERNAL_MIN_BYTES = 1024
"""Initializers of at least this many bytes go to :data:`WEIGHTS_NAME`; smaller ones stay in the graph."""


def telemetry_off() -> None:
    """Switch ONNX Runtime's usage telemetry off for this process, unless the user set :data:`TELEMETRY_SWITCH`."""
    os.environ.setdefault(TELEMETRY_SWITCH, "1")


def import_onnxruntime():
    """The ``onnxruntime`` module, with its usage telemetry switched off unless the user chose otherwise (see the
    module). Where onnxruntime had already started in this process (another plugin), its own setting stays."""
    telemetry_off()
    import onnxruntime

    return onnxruntime


def new_session(path: Path, providers: list[str], threads: int, optimized: Path | None = None):
    """An ONNX Runtime session of the export at ``path`` with ``threads`` intra-op threads. ``optimized``: the folder
    where the graph optimised for this CPU is kept: loaded from there when present (a damaged folder is replaced),
    else saved there by this session. Raises :class:`DeepRasterError` when onnxruntime cannot be imported or the
    export cannot be loaded."""
    try:
        import_onnxruntime()
    except Exception as exc:  # noqa: BLE001 (ImportError, or a library that fails while it loads)
        raise DeepRasterError(f"onnxruntime cannot be imported ({exc}). Reinstall it (Deep Raster's installer, or "
                              "pip install onnxruntime), or run with runtime 'torch'.") from exc
    if optimized is not None and os.path.lexists(optimized):
        before = _inode(optimized)
        try:
            return _session(optimized / GRAPH_NAME, providers, threads, optimize=False)
        except Exception:  # noqa: BLE001 (a damaged, incomplete or foreign entry: made again from the export below)
            if _inode(optimized) == before:  # not one another process has just put there
                _discard(optimized)
    staging = _staging_folder(optimized) if optimized is not None else None
    try:
        try:
            session = _session(path, providers, threads, save_to=staging)
        except Exception:  # noqa: BLE001 (saving can fail, e.g. a full disk: make it without saving)
            if staging is None:
                raise
            shutil.rmtree(staging, ignore_errors=True)
            staging = None
            session = _session(path, providers, threads)
        if staging is not None and optimized is not None:
            _publish(staging, optimized)
        return session
    except Exception as exc:  # noqa: BLE001 (onnxruntime raises its own unexported error types)
        raise DeepRasterError(f"ONNX Runtime cannot load {path.name} ({exc}). Delete that file to export the "
                              "model again, or run with runtime 'torch'.") from exc
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)  # gone already when it was published


def _session(path: Path, providers: list[str], threads: int, optimize: bool = True, save_to: Path | None = None):
    """A session of the graph at ``path``: optimised fully (``optimize``) or taken as it is (a graph saved
    optimised); ``save_to``: the folder where ONNX Runtime writes the optimised graph and its weights."""
    onnxruntime = import_onnxruntime()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    levels = onnxruntime.GraphOptimizationLevel
    options.graph_optimization_level = levels.ORT_ENABLE_ALL if optimize else levels.ORT_DISABLE_ALL
    if save_to is not None:
        options.optimized_model_filepath = str(save_to / GRAPH_NAME)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", WEIGHTS_NAME)
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                         str(EXTERNAL_MIN_BYTES))
        options.log_severity_level = 3  # not its warning that the file suits this CPU only: the folder's name says so
    return onnxruntime.InferenceSession(str(path), options, providers=providers)


def _staging_folder(target: Path) -> Path | None:
    """A new empty folder beside ``target`` named as a partial of it (removed by the cache's pruning when left
    behind), or None where ``target``'s folder cannot be written."""
    try:
        return Path(tempfile.mkdtemp(prefix=f".{target.name}-", suffix=".part", dir=target.parent))
    except OSError:
        return None


def _publish(staging: Path, target: Path) -> None:
    """Rename the complete ``staging`` folder to ``target``, readable by all, its files on disk first (after a power
    cut the name never points to weights not yet written); where another process published first (or the cache
    cannot take it) ``staging`` is left for the caller to delete."""
    with contextlib.suppress(OSError):
        for child in staging.iterdir():
            os.chmod(child, 0o644)
            _fsync(child)
        os.chmod(staging, 0o755)
        _fsync(staging)
        os.rename(staging, target)  # fails when a complete folder is there already: the first one stays
        _fsync(target.parent)


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's data to disk."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _inode(path: Path) -> int | None:
    """The inode of ``path``, or None when there is nothing there."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _discard(folder: Path) -> None:
    """Move ``folder`` aside in one rename (a process still reading it keeps its files), then delete it."""
    remove_aside(folder, folder.with_name(f".{folder.name}-{uuid.uuid4().hex}.part"))
