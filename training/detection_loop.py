"""One epoch of detector training and one pass over the validation samples (PyTorch); the scores come from
:mod:`analysis.detection_metrics`, the one place average precision is computed."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..analysis.detection_metrics import DetectionScores
from ..tiling.callbacks import Callbacks
from .loop import Cancelled


def detector_epoch(net, batches: Iterable, optimizer, scheduler, scaler, device, amp: bool, callbacks: Callbacks,
                   step: Callable[[], None]) -> tuple[float, dict[str, float]]:
    """Train one epoch of a :class:`models.torchvision_detectors.TorchvisionDetector`: the mean summed loss per
    image and the mean of each of torchvision's loss terms. Raises :class:`training.loop.Cancelled` between
    batches on a cancel."""
    import torch

    net.train()
    sums: dict[str, float] = {}
    total, count = 0.0, 0
    for images, targets in batches:
        if callbacks.is_cancelled():
            raise Cancelled
        images = images.to(device, non_blocking=True)
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            terms = net.losses(images, targets)
            loss = sum(terms.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"The training loss became {float(loss)}: lower the learning rate.")
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        total += float(loss.detach()) * len(images)
        count += len(images)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach()) * len(images)
        step()
    return total / max(count, 1), {k: v / max(count, 1) for k, v in sums.items()}


def precise_batch_norm(net, batches: Iterable, device, callbacks: Callbacks) -> None:
    """Set the running statistics of every batch-norm layer to their average over ``batches`` (the network's
    current weights, no gradient): "precise BN". A detector trained from scratch on few batches otherwise keeps
    running statistics far from its activations' (an exponential average that started at mean 0, variance 1), and in
    eval mode its features stop depending on the input. Raises :class:`training.loop.Cancelled` on a cancel."""
    import torch

    layers = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    net.eval()
    for m in layers:
        m.train()
    try:
        with torch.no_grad():
            for images, _ in batches:
                if callbacks.is_cancelled():
                    raise Cancelled
                net(images.to(device, non_blocking=True))
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        net.eval()


def detector_scores(net, batches: Iterable, device, amp: bool, values: Sequence[int], names: Sequence[str],
                    callbacks: Callbacks, step: Callable[[], None]) -> dict[str, Any]:
    """Detect on every validation sample and score against its boxes (:class:`DetectionScores`; ``values`` are the
    class values in class-index order). Raises :class:`training.loop.Cancelled` between batches on a cancel."""
    import numpy as np
    import torch

    net.eval()
    scores = DetectionScores(values, names)
    lookup = np.asarray(values, dtype=np.int64)
    with torch.inference_mode():
        for images, targets in batches:
            if callbacks.is_cancelled():
                raise Cancelled
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                found = net(images.to(device, non_blocking=True))
            for f, t in zip(found, targets, strict=True):
                scores.add(f["boxes"].float().cpu().numpy(), f["scores"].float().cpu().numpy(),
                           f["labels"].cpu().numpy(), t["boxes"].numpy(), lookup[t["classes"].numpy()])
            step()
    return scores.result()
