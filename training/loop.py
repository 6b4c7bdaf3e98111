"""One epoch of training and one pass over the validation chips (PyTorch); the metrics come from
:mod:`analysis.metrics`, so training, evaluation and the analysis reports count pixels the same way."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from ..analysis.metrics import ConfusionMatrix, class_scores
from ..tiling.callbacks import Callbacks
from .dataset import IGNORE_INDEX


class Cancelled(Exception):
    """The user asked to stop between two batches."""


@contextlib.contextmanager
def deterministic(on: bool) -> Iterator[None]:
    """PyTorch's deterministic algorithms inside the block (CPU runs: equal seeds give equal weights)."""
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if on:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


def train_epoch(net, batches: Iterable, loss_fn, optimizer, scheduler, scaler, device, amp: bool,
                callbacks: Callbacks, step: Callable[[], None]) -> float:
    """Train one epoch; the mean training loss per chip. Raises :class:`Cancelled` between batches on a cancel."""
    import torch

    net.train()
    total, count = 0.0, 0
    for images, labels in batches:
        if callbacks.is_cancelled():
            raise Cancelled
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = loss_fn(net(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        total += float(loss.detach()) * len(images)
        count += len(images)
        step()
    return total / max(count, 1)


def validate(net, batches: Iterable, loss_fn, device, amp: bool, values: Sequence[int], names: Sequence[str],
             callbacks: Callbacks, step: Callable[[], None]) -> tuple[float, dict[str, Any]]:
    """Mean validation loss per chip and :func:`analysis.metrics.class_scores` over the validation pixels (ignored
    pixels left out). Raises :class:`Cancelled` between batches on a cancel."""
    import torch

    net.eval()
    matrix = ConfusionMatrix(range(len(values)))
    total, count = 0.0, 0
    with torch.inference_mode():
        for images, labels in batches:
            if callbacks.is_cancelled():
                raise Cancelled
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                logits = net(images)
            total += float(loss_fn(logits.float(), labels)) * len(images)
            count += len(images)
            reference = labels.cpu().numpy()
            matrix.update(reference, logits.argmax(1).cpu().numpy(), reference != IGNORE_INDEX)
            step()
    return total / max(count, 1), class_scores(matrix.matrix, values, names)
