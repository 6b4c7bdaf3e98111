"""The compute step on ONNX Runtime: an exported network applied to batches of tiles, activation in numpy.

Same call contract as :class:`tiling.predictor.TorchPredictor`, without PyTorch: importing this module and running
it never imports torch, so a run on ONNX Runtime starts faster and holds less memory.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

from .errors import DeepRasterError
from .onnx_session import import_onnxruntime, new_session

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


CUDA_PROVIDER_LIBRARIES = ("libonnxruntime_providers_cuda.so", "onnxruntime_providers_cuda.dll")
"""The CUDA execution provider's library in ``onnxruntime/capi``: shipped by onnxruntime-gpu only."""


def cuda_provider_shipped() -> bool:
    """Whether the installed onnxruntime ships the CUDA provider's library (looked up without importing it)."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return False
    capi = Path(next(iter(spec.submodule_search_locations))) / "capi"
    return any((capi / name).exists() for name in CUDA_PROVIDER_LIBRARIES)


def resolve_providers(device: str) -> list[str]:
    """ONNX Runtime execution providers for ``device``: ``auto`` → CUDA when this onnxruntime has it, else CPU.
    For ``cpu``, and for ``auto`` where the package ships no CUDA provider library, onnxruntime is not imported here
    (0.02–0.07 s that a run spends better on the session's thread)."""
    name = device.lower()
    if name == "cpu":
        return ["CPUExecutionProvider"]
    if name == "auto" or name.startswith("cuda"):
        asked = name != "auto" or cuda_provider_shipped()
        if asked and "CUDAExecutionProvider" in import_onnxruntime().get_available_providers():
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
        optimized: the folder where the graph optimised for this CPU is kept: loaded from there when present, else
            saved there (see :mod:`tiling.onnx_session`), or a function giving it (called on the session's thread);
            None (or a function giving None): every session optimises the graph itself.
    """

    def __init__(self, path: str | os.PathLike[str], providers: Sequence[str] = ("CPUExecutionProvider",),
                 activation: str = "softmax", threads: int | None = None, batch_size: int = 1,
                 optimized: Path | Callable[[], Path | None] | None = None) -> None:
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

    def settle(self) -> None:
        """Wait until the session's thread is done, its errors left for whoever uses the session. For a predictor a
        run does not use: a process that ends (``qgis_process`` after a failed check) while ONNX Runtime is still
        making a session crashes, and leaves the kept graph half written or moved aside."""
        wait([self._making])

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


def _new_session(path: Path, providers: list[str], threads: int,
                 optimized: Path | Callable[[], Path | None] | None):
    """:func:`tiling.onnx_session.new_session`, with ``optimized`` given by a function called here (a function that
    fails means no kept graph: that cache never stops a run)."""
    if callable(optimized):
        try:
            optimized = optimized()
        except Exception:  # noqa: BLE001 (a CPU signature or cache folder that cannot be read: optimise as usual)
            optimized = None
    return new_session(path, providers, threads, optimized)


class _Deferred:
    """A call made when its result is asked for, on the asking thread (one stream): the ``Future`` interface
    :meth:`OnnxPredictor.__call__` uses."""

    def __init__(self, function: Callable[[np.ndarray], np.ndarray], part: np.ndarray) -> None:
        self.function, self.part = function, part

    def result(self) -> np.ndarray:
        return self.function(self.part)

    def cancel(self) -> bool:
        return True
