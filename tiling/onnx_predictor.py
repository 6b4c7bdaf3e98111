"""The compute step on ONNX Runtime: an exported network applied to batches of tiles, activation in numpy.

Same call contract as :class:`tiling.predictor.TorchPredictor`, without PyTorch: importing this module and running
it never imports torch, so a run on ONNX Runtime starts faster and holds less memory.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .errors import DeepRasterError

ORT_PIXELS_PER_CALL = 1 << 16
"""Input pixels per ONNX Runtime call on the CPU (one 256 px tile, or one larger tile): one call per tile lets a
cancel be seen after each tile and keeps activation buffers small."""

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
        threads: intra-op threads (None: the cores this process may use).
    """

    def __init__(self, path: str | os.PathLike[str], providers: Sequence[str] = ("CPUExecutionProvider",),
                 activation: str = "softmax", threads: int | None = None) -> None:
        import onnxruntime

        self.poll: Poll | None = None  # set by the run loop (tiling.engine.TiledRun)
        self.activation = activation
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or cpu_cores()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=list(providers))
        except Exception as exc:  # noqa: BLE001 (onnxruntime raises its own unexported error types)
            raise DeepRasterError(f"ONNX Runtime cannot load {Path(path).name} ({exc}). Delete that file to export "
                                  "the model again, or run with runtime 'torch'.") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.on_cpu = self.session.get_providers()[0] == "CPUExecutionProvider"

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses."""
        return list(self.session.get_providers())

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        step = len(batch)
        if self.on_cpu:
            step = max(1, ORT_PIXELS_PER_CALL // (batch.shape[2] * batch.shape[3]))
        outputs = []
        for start in range(0, len(batch), step):
            part = np.ascontiguousarray(batch[start:start + step], dtype=np.float32)
            logits = self.session.run(None, {self.input_name: part})[0]
            outputs.append(activate(logits, self.activation))
            if self.poll is not None:
                self.poll(min(start + step, len(batch)) / len(batch))
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
