"""The compute step on ONNX Runtime: an exported network applied to batches of tiles, activation in numpy.

Same call contract as :class:`tiling.predictor.TorchPredictor`, without PyTorch: importing this module and running
it never imports torch, so a run on ONNX Runtime starts faster and holds less memory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .errors import DeepRasterError

ORT_PIXELS_PER_CALL = 1 << 16
"""Input pixels per ONNX Runtime call on the CPU (one 256 px tile, or one larger tile): one call per tile lets a
cancel be seen after each tile and bounds the activation buffers of one call (up to :data:`MAX_STREAMS` calls run at
once: see :func:`cpu_streams`)."""

MAX_STREAMS = 4
"""At most this many ONNX Runtime calls run at once on the CPU (see :func:`cpu_streams`)."""

Poll = Callable[[float], None]
"""Called after each call with the fraction (0–1) of the current batch done; may raise ``RunCancelled``."""


def onnxruntime_available() -> bool:
    """True when the ``onnxruntime`` package can be imported (looked up without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


def cpu_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cpu_streams(threads: int, batch_size: int) -> tuple[int, int]:
    """How ``threads`` CPU threads are spent: ``(streams, intra-op threads of the session)``.

    A 256 px tile keeps two intra-op threads only partly busy (the deep, small layers of a U-Net parallelise
    poorly), so the tiles of one batch run as concurrent calls (streams) of one session. Streams never exceed the
    tiles of a batch nor :data:`MAX_STREAMS`. The session's intra-op pool (``intra − 1`` threads) is shared by every
    call running, and each calling thread computes too, so ``intra = threads − streams + 1`` keeps ``threads`` cores
    busy (16 threads, batches of 4: 4 streams sharing a pool of 12). Each tile is still computed alone, so outputs
    do not depend on the split (for the ukis-csmask U-Net the bits equal one call at a time:
    tests/test_onnx_runtime.py).
    """
    streams = max(1, min(threads, batch_size, MAX_STREAMS))
    return streams, max(1, threads - streams + 1)


def resolve_providers(device: str) -> list[str]:
    """ONNX Runtime execution providers for ``device``: ``auto`` → CUDA when this onnxruntime has it, else CPU."""
    import onnxruntime

    name = device.lower()
    available = onnxruntime.get_available_providers()
    if name == "cpu":
        return ["CPUExecutionProvider"]
    if name == "auto" or name.startswith("cuda"):
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if name == "auto":
            return ["CPUExecutionProvider"]
        raise DeepRasterError("Device 'cuda' was chosen but this onnxruntime has no CUDA provider (install "
                              "onnxruntime-gpu), or choose device 'auto' / 'cpu', or runtime 'torch'.")
    raise DeepRasterError(f"Unknown device {device!r}: choose 'auto', 'cpu' or 'cuda'.")


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """``softmax`` over channels (axis 1), ``sigmoid`` per channel, or ``none``; float32, in place where possible."""
    y = np.asarray(logits, dtype=np.float32)
    if activation == "softmax":
        y -= y.max(axis=1, keepdims=True)
        np.exp(y, out=y)
        y /= y.sum(axis=1, keepdims=True)
    elif activation == "sigmoid":
        np.negative(y, out=y)
        np.exp(y, out=y)
        y += 1.0
        np.reciprocal(y, out=y)
    elif activation != "none":
        raise DeepRasterError(f"Unknown activation {activation!r}: expected 'softmax', 'sigmoid' or 'none'.")
    return y


class OnnxPredictor:
    """Callable ``(N, bands, H, W)`` float32 array → ``(N, channels, H, W)`` float32 activations on ONNX Runtime.

    Args:
        path: the ``.onnx`` file (one input, first output = logits).
        providers: ONNX Runtime execution providers, in order of preference.
        activation: ``softmax`` over channels, ``sigmoid`` per channel, or ``none``.
        threads: CPU threads in all (None: the cores this process may use).
        batch_size: tiles per call of this predictor (the run's batch); on the CPU up to that many tiles are
            computed at once (:func:`cpu_streams`).
        optimized: where the graph optimised for this CPU is kept: loaded from there when present, else saved
            there (see :mod:`models.onnx_optimized`); None: every session optimises the graph itself.
    """

    def __init__(self, path: str | os.PathLike[str], providers: Sequence[str] = ("CPUExecutionProvider",),
                 activation: str = "softmax", threads: int | None = None, batch_size: int = 1,
                 optimized: Path | None = None) -> None:
        self.poll: Poll | None = None  # set by the run loop (tiling.engine.TiledRun)
        self.activation = activation
        threads = threads or cpu_cores()
        self.made_as = (Path(path), list(providers), threads, batch_size)  # to tell whether it suits another run
        on_cpu = list(providers)[:1] == ["CPUExecutionProvider"]
        self.streams, intra_op_threads = cpu_streams(threads, batch_size) if on_cpu else (1, threads)
        self._pool: ThreadPoolExecutor | None = None  # the streams' threads, started on the first batch
        # Made in the background (ONNX Runtime releases the GIL while it loads and optimises the graph): the run
        # opens its outputs and reads its first strip meanwhile; the first batch waits for it.
        making = ThreadPoolExecutor(1, thread_name_prefix="deepraster-onnx-session")
        self._making = making.submit(_new_session, Path(path), list(providers), intra_op_threads,
                                     optimized if on_cpu else None)
        making.shutdown(wait=False)

    @property
    def session(self):
        """The ONNX Runtime session (waits until it is made; raises :class:`DeepRasterError` when it cannot be)."""
        return self._making.result()

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    @property
    def on_cpu(self) -> bool:
        """Whether the session computes on the CPU (also when a CUDA request fell back to it)."""
        return self.session.get_providers()[0] == "CPUExecutionProvider"

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses."""
        return list(self.session.get_providers())

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        step = len(batch)
        if self.on_cpu:  # whole tiles up to ORT_PIXELS_PER_CALL per call, and a call for every stream
            step = max(1, min(ORT_PIXELS_PER_CALL // (batch.shape[2] * batch.shape[3]), -(-len(batch) // self.streams)))
        starts = range(0, len(batch), step)
        if self.streams > 1 and len(starts) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix="deepraster-onnx")
            calls = [self._pool.submit(self._run, batch[start:start + step]) for start in starts]
        else:
            calls = [_Deferred(self._run, batch[start:start + step]) for start in starts]
        outputs = []
        try:
            for start, call in zip(starts, calls, strict=True):
                outputs.append(call.result())
                if self.poll is not None:  # on this (the run's) thread: it may report progress and cancel
                    self.poll(min(start + step, len(batch)) / len(batch))
        finally:
            for call in calls:  # after a cancel, calls not started yet are dropped
                call.cancel()
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def _run(self, part: np.ndarray) -> np.ndarray:
        """Activations of one call: ``part`` through the session."""
        logits = self.session.run(None, {self.input_name: np.ascontiguousarray(part, dtype=np.float32)})[0]
        return activate(logits, self.activation)

    def close(self) -> None:
        """Stop the streams' threads (also done when the predictor is garbage-collected)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _new_session(path: Path, providers: list[str], threads: int, optimized: Path | None = None):
    """An ONNX Runtime session of the export at ``path`` with ``threads`` intra-op threads. ``optimized``: where the
    graph optimised for this CPU is kept (see :mod:`models.onnx_optimized`): loaded from there when present (a
    damaged file is replaced), else saved there by this session. Raises :class:`DeepRasterError` when the export
    cannot be loaded."""
    if optimized is not None and optimized.is_file():
        try:
            return _session(optimized, providers, threads, optimize=False)
        except Exception:  # noqa: BLE001 (a damaged or foreign file: made again from the export below)
            with contextlib.suppress(OSError):  # a cache that cannot be written: the export is loaded all the same
                optimized.unlink(missing_ok=True)
    save = _temporary_beside(optimized) if optimized is not None else None
    try:
        try:
            session = _session(path, providers, threads, save_to=save)
        except Exception:  # noqa: BLE001 (saving can fail, e.g. graphs over 2 GB: make it without saving)
            if save is None:
                raise
            save.unlink(missing_ok=True)
            save = None
            session = _session(path, providers, threads)
        if save is not None and optimized is not None:
            with contextlib.suppress(OSError):  # a cache that cannot take it: the next session optimises again
                os.chmod(save, 0o644)
                os.replace(save, optimized)
        return session
    except Exception as exc:  # noqa: BLE001 (onnxruntime raises its own unexported error types)
        raise DeepRasterError(f"ONNX Runtime cannot load {path.name} ({exc}). Delete that file to export the "
                              "model again, or run with runtime 'torch'.") from exc
    finally:
        if save is not None:
            save.unlink(missing_ok=True)


def _session(path: Path, providers: list[str], threads: int, optimize: bool = True, save_to: Path | None = None):
    """A session of the graph at ``path``: optimised fully (``optimize``) or taken as it is (a graph saved
    optimised); ``save_to``: where ONNX Runtime writes the optimised graph."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    levels = onnxruntime.GraphOptimizationLevel
    options.graph_optimization_level = levels.ORT_ENABLE_ALL if optimize else levels.ORT_DISABLE_ALL
    if save_to is not None:
        options.optimized_model_filepath = str(save_to)
        options.log_severity_level = 3  # not its warning that the file suits this CPU only: the file's name says so
    return onnxruntime.InferenceSession(str(path), options, providers=providers)


def _temporary_beside(target: Path) -> Path | None:
    """A new empty file in ``target``'s folder named as a partial of it (removed by the cache's pruning when
    left behind), or None where that folder cannot be written."""
    try:
        handle, name = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".part", dir=target.parent)
    except OSError:
        return None
    os.close(handle)
    return Path(name)


class _Deferred:
    """A call made when its result is asked for, on the asking thread (one stream): the ``Future`` interface
    :meth:`OnnxPredictor.__call__` uses."""

    def __init__(self, function: Callable[[np.ndarray], np.ndarray], part: np.ndarray) -> None:
        self.function, self.part = function, part

    def result(self) -> np.ndarray:
        return self.function(self.part)

    def cancel(self) -> bool:
        return True
