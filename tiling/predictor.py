"""The compute step: a torch module applied to batches of tiles on the CPU or a CUDA GPU, plus the activation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from .errors import DeepRasterError


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → the first CUDA GPU if there is one, else the CPU; ``"cuda"`` fails clearly without a GPU."""
    name = name.lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeepRasterError("Device 'cuda' was chosen but PyTorch sees no CUDA GPU here. Choose 'auto' or 'cpu'.")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise DeepRasterError(f"Unknown device {name!r}: choose 'auto', 'cpu' or 'cuda'.")
    return torch.device(name)


CPU_PIXELS_PER_CALL = 1 << 16
"""Input pixels per forward call on the CPU (one 256 px tile, or one larger tile). Batching gains nothing on the
CPU (four 256 px tiles of the ukis U-Net: 2.67 s in one call, 2.62 s in four), while activation buffers grow with
the batch: above 64 MiB glibc maps them afresh on every call from a worker thread (see :mod:`tiling.allocator`).
One call per tile also lets a cancel be seen after each tile (:attr:`TorchPredictor.poll`)."""

@contextmanager
def denormals_flushed(on_cpu: bool) -> Iterator[None]:
    """Inside the block, denormal floats count as zero in this thread (and the compute threads it starts).

    Denormals (|x| < 1.2e-38) can make CPU arithmetic 10–100× slower: one run of the ukis U-Net at 38 px overlap
    took 172 s with PyTorch's defaults and 17 s with the flag (not reproduced on an idle machine). The flag is
    processor state of the calling thread, so it is switched off again after the block: code running after the
    model in the same thread (QGIS, numpy) keeps IEEE arithmetic.
    """
    if not on_cpu:
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""Compute precisions of :class:`TorchPredictor` on a CUDA GPU (weights and activations in that type)."""
PRECISION_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def resolve_precision(name: str | None, half: bool = False) -> str:
    """The precision's canonical name: None → ``float16`` when ``half``, else ``float32``; aliases accepted."""
    if name is None or not str(name).strip():
        return "float16" if half else "float32"
    key = str(name).strip().lower()
    key = PRECISION_ALIASES.get(key, key)
    if key not in PRECISIONS:
        raise DeepRasterError(f"Unknown precision {name!r}: choose float32, float16 or bfloat16 "
                              "(fp32, fp16, bf16).")
    return key


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the model computes in: float32 on the CPU whatever ``precision`` says (as ``half`` always was);
    on CUDA the precision's, bfloat16 only on a GPU that supports it (compute capability 8.0, Ampere, or newer)."""
    if device.type != "cuda":
        return torch.float32
    if precision == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise DeepRasterError(f"This GPU ({torch.cuda.get_device_name(device)}) does not compute in bfloat16: "
                              "choose float16 or float32.")
    return PRECISIONS[precision]


Poll = Callable[[float], None]
"""Called after each forward call with the fraction (0–1) of the current batch done; it may raise
:class:`~tiling.errors.RunCancelled` to stop the run between two calls."""


class TorchPredictor:
    """Callable ``(N, bands, H, W)`` float32 array → ``(N, channels, H, W)`` float32 activations.

    On the CPU the batch goes through the model in groups of at most :data:`CPU_PIXELS_PER_CALL` input pixels
    (at least one tile); on a GPU in one call.

    Args:
        model: the network (moved to ``device`` and put in eval mode here).
        device: where to run.
        activation: ``softmax`` over channels, ``sigmoid`` per channel, or ``none``.
        half: run in float16 (CUDA only; ignored on the CPU).
        precision: ``float32``, ``float16`` or ``bfloat16`` (or ``fp32`` / ``fp16`` / ``half`` / ``bf16``),
            overriding ``half`` (see :func:`resolve_precision`); CUDA only: the CPU always computes in float32.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, activation: str = "softmax",
                 half: bool = False, precision: str | None = None) -> None:
        self.poll: Poll | None = None  # set by the run loop (tiling.engine.TiledRun)
        self.device = device
        self.dtype = compute_dtype(resolve_precision(precision, half), device)
        self.half = self.dtype == torch.float16
        self.model = model.to(device).eval()
        if self.dtype != torch.float32:
            self.model = self.model.to(self.dtype)
        self.activation = activation

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        step = len(batch)
        if self.device.type == "cpu":
            step = max(1, CPU_PIXELS_PER_CALL // (batch.shape[2] * batch.shape[3]))
        outputs = []
        for start in range(0, len(batch), step):
            outputs.append(self._forward(batch[start:start + step]))
            if self.poll is not None:
                self.poll(min(start + step, len(batch)) / len(batch))
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """One forward call and the activation."""
        with denormals_flushed(self.device.type == "cpu"), torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch))
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
            if self.dtype != torch.float32:
                x = x.to(self.dtype)
            y = self.model(x).float()
            if self.activation == "softmax":
                y = torch.softmax(y, dim=1)
            elif self.activation == "sigmoid":
                y = torch.sigmoid(y)
            return y.cpu().numpy()


#: The eight symmetries of the square tile (dihedral group D4) as ``(quarter turns, flip left-right first)``.
TTA_TRANSFORMS = tuple((k, flip) for flip in (False, True) for k in range(4))


class TTAPredictor:
    """Test-time augmentation around a predictor: each batch goes through ``predict`` once per symmetry of the
    square (identity, 90°/180°/270° rotations, and each of those after a left-right flip), each output is turned
    back, and the eight are averaged in probability (activation) space, as ArcGIS's ``test_time_augmentation``.

    Costs eight forward passes per tile. A model that is itself flip- and rotation-equivariant gives exactly its
    plain output. Tiles must be square when ``transforms`` include quarter turns.
    """

    def __init__(self, predict, transforms: tuple[tuple[int, bool], ...] = TTA_TRANSFORMS) -> None:
        self.predict = predict
        self.transforms = transforms
        self.poll: Poll | None = None  # set by the run loop; passed on to ``predict`` as a share of each pass

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        total: np.ndarray | None = None
        passes = len(self.transforms)
        for index, (k, flip) in enumerate(self.transforms):
            if self.poll is not None and hasattr(self.predict, "poll"):
                self.predict.poll = lambda fraction, i=index, outer=self.poll: outer((i + fraction) / passes)
            x = batch[..., ::-1] if flip else batch
            y = self.predict(np.ascontiguousarray(np.rot90(x, k, axes=(2, 3))))
            y = np.rot90(y, -k, axes=(2, 3))
            y = y[..., ::-1] if flip else y
            total = y.astype(np.float32) if total is None else total + y
        assert total is not None
        return np.ascontiguousarray(total / len(self.transforms), dtype=np.float32)
