"""The detector applied to batches of tiles on the CPU or a CUDA GPU (device choice: :mod:`tiling.predictor`)."""

from __future__ import annotations

import numpy as np

from ..models.detectors import Detections, load_detector, parse_detections
from ..models.spec import ModelPackage


class DetectorPredictor:
    """Callable ``(N, bands, H, W)`` float32 array → one :class:`Detections` per tile (tile pixels).

    Args:
        package: a detection package (its TorchScript detector is loaded here, weights checked).
        device: ``auto``, ``cpu`` or ``cuda``.
        half: float16 on a GPU (ignored on the CPU).
    """

    def __init__(self, package: ModelPackage, device: str = "auto", half: bool = False) -> None:
        from ..tiling.predictor import resolve_device

        self.name = f"The detector of {package.name!r}"
        self.device = resolve_device(device)
        self.half = half and self.device.type == "cuda"
        self.model = load_detector(package).to(self.device).eval()
        if self.half:
            self.model = self.model.half()

    def __call__(self, batch: np.ndarray) -> list[Detections]:
        import torch

        from ..tiling.predictor import denormals_flushed

        with denormals_flushed(self.device.type == "cpu"), torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            output = self.model(x.half() if self.half else x)
        return parse_detections(output, len(batch), self.name)
