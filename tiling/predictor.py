"""The compute step: a torch module applied to batches of tiles on the CPU or a CUDA GPU, plus the activation."""

from __future__ import annotations

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


CPU_PIXELS_PER_CALL = 1 << 18
"""Input pixels per forward call on the CPU (four 256 px tiles, or one larger tile). Batching gains nothing on the
CPU, while activation buffers grow with the batch: above 64 MiB glibc maps them afresh on every call from a worker
thread (see :mod:`tiling.allocator`). One 640 px tile per call ran the ukis U-Net 1.9× faster than four."""


class TorchPredictor:
    """Callable ``(N, bands, H, W)`` float32 array → ``(N, channels, H, W)`` float32 activations.

    On the CPU the batch goes through the model in groups of at most :data:`CPU_PIXELS_PER_CALL` input pixels
    (at least one tile); on a GPU in one call.

    Args:
        model: the network (moved to ``device`` and put in eval mode here).
        device: where to run.
        activation: ``softmax`` over channels, ``sigmoid`` per channel, or ``none``.
        half: run in float16 (CUDA only; ignored on the CPU).
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, activation: str = "softmax",
                 half: bool = False) -> None:
        self.device = device
        self.half = half and device.type == "cuda"
        self.model = model.to(device).eval()
        if self.half:
            self.model = self.model.half()
        self.activation = activation

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        step = len(batch)
        if self.device.type == "cpu":
            step = max(1, CPU_PIXELS_PER_CALL // (batch.shape[2] * batch.shape[3]))
        if step >= len(batch):
            return self._forward(batch)
        return np.concatenate([self._forward(batch[i:i + step]) for i in range(0, len(batch), step)])

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """One forward call and the activation."""
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch))
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
            if self.half:
                x = x.half()
            y = self.model(x).float()
            if self.activation == "softmax":
                y = torch.softmax(y, dim=1)
            elif self.activation == "sigmoid":
                y = torch.sigmoid(y)
            return y.cpu().numpy()
