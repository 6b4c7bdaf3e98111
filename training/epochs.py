"""The epoch loop every training run shares (segmentation, detection): seeding, resume from the checkpoint of an
interrupted run, one checkpoint per epoch, the best epoch by a validation score, early stopping, cancel.

A subclass builds its network, calls :meth:`EpochRun.make_optimizer` (optimiser, schedule, gradient scaler, batches
per epoch) and then :meth:`EpochRun.resume`, and implements :meth:`EpochRun.run_epoch` (one
epoch of training and one validation pass) and :meth:`EpochRun.entry` (the epoch's history entry, holding the score
under :attr:`EpochRun.score_key`).
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..tiling.callbacks import Callbacks
from .checkpoint import load_checkpoint, random_states, restore_random_states, save_checkpoint, weights_digest
from .dataset import batches, epoch_order
from .loop import Cancelled, train_epoch, validate
from .network import class_weights, make_schedule


class EpochRun:
    """The state of one training run, epoch by epoch (see the module docstring).

    Args:
        request: the run's request (``epochs``, ``patience``, ``seed`` are read here).
        device: the torch device.
        work: the hidden folder holding the checkpoint.
        callbacks: progress, log and cancel.
    """

    score_key = "validation_miou"
    """The history entry's key of the score that picks the best epoch (higher is better)."""
    score_label = "validation mIoU"
    """How the log names the score."""
    best_key = "score"
    """The key of the best epoch's score in :attr:`best` (as the checkpoint stores it)."""

    def __init__(self, request: Any, device, work: Path, callbacks: Callbacks) -> None:
        import torch

        self.request, self.device, self.work, self.cb = request, device, work, callbacks
        self.amp = device.type == "cuda"
        torch.manual_seed(request.seed)
        np.random.seed(request.seed % 2**32)
        random.seed(request.seed)
        self.net = self.optimizer = self.scheduler = self.scaler = None
        self.batches_per_epoch = self.validation_batches = 0
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"epoch": 0, self.best_key: -1.0, "scores": None}
        self.best_state: dict[str, Any] | None = None
        self.stale = 0
        self.stopped = "completed"
        self.resumed_from = 0

    def make_optimizer(self, train_items: int, validation_items: int) -> None:
        """Batches per epoch of ``train_items`` training and ``validation_items`` validation items at the request's
        batch size; AdamW at the request's learning rate and weight decay, its schedule over every batch of the run,
        and the gradient scaler (on under CUDA mixed precision, :attr:`amp`). Call once :attr:`net` is built."""
        import torch

        size = self.request.batch_size
        self.batches_per_epoch = math.ceil(train_items / size)
        self.validation_batches = math.ceil(validation_items / size)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=self.request.learning_rate,
                                           weight_decay=self.request.weight_decay)
        self.scheduler = make_schedule(self.request.schedule, self.optimizer, self.request.learning_rate,
                                       self.request.epochs * self.batches_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def run_epoch(self, step) -> tuple[float, float | None, dict[str, Any]]:
        """Train epoch :attr:`epoch` and validate: (mean training loss, validation loss or None, scores); ``step()``
        after every batch. Raises :class:`training.loop.Cancelled` on a cancel."""
        raise NotImplementedError

    def entry(self, loss: float, val_loss: float | None, scores: dict[str, Any]) -> dict[str, Any]:
        """The validation part of the epoch's history entry (holding :attr:`score_key`)."""
        raise NotImplementedError

    def best_weights(self) -> dict[str, Any]:
        """The weights kept for the best epoch (a CPU copy)."""
        return {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}

    def resume(self) -> None:
        """Continue from the work folder's checkpoint, if there is one."""
        state = load_checkpoint(self.work)
        if state is None:
            return
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        restore_random_states(state["random"])
        self.epoch, self.history, self.best = state["epoch"], list(state["history"]), dict(state["best"])
        self.best_state, self.stale = state["best_model"], state["stale"]
        self.resumed_from = self.epoch
        self.cb.info(f"Resuming after epoch {self.epoch} from the checkpoint in {self.work}.")

    def checkpoint(self) -> None:
        save_checkpoint(self.work, {
            "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "random": random_states(),
            "epoch": self.epoch, "history": self.history, "best": self.best, "best_model": self.best_state,
            "stale": self.stale})

    def train(self) -> None:
        """Epochs until the last, early stopping, or a cancel (which keeps the best epoch so far)."""
        epochs, patience = self.request.epochs, self.request.patience
        per_epoch = self.batches_per_epoch + self.validation_batches
        done = [0]

        def step() -> None:
            done[0] += 1
            self.cb.progress(min((self.epoch + done[0] / per_epoch) / epochs, 1.0))

        if self.epoch >= epochs or (patience and self.stale >= patience):
            return
        self.cb.stage("Training")
        while self.epoch < epochs:
            done[0] = 0
            began = time.perf_counter()
            rate = self.optimizer.param_groups[0]["lr"]
            try:
                loss, val_loss, scores = self.run_epoch(step)
            except Cancelled:
                self.stopped = "cancelled"
                self.cb.warning(f"Cancelled during epoch {self.epoch + 1}: the package holds the best epoch so far "
                                f"({self.best['epoch'] or 'none'}).")
                return
            self.epoch += 1
            self._record(loss, val_loss, scores, rate, time.perf_counter() - began)
            self.checkpoint()
            h = self.history[-1]
            losses = f"training loss {loss:.4f}" + (f", validation loss {val_loss:.4f}" if val_loss is not None else "")
            self.cb.info(f"Epoch {self.epoch}/{epochs}: {losses}, {self.score_label} {h[self.score_key]:.4f}, "
                         f"{h['seconds']:.1f} s" + (" (best so far)" if self.best["epoch"] == self.epoch else ""))
            self.cb.progress(self.epoch / epochs)
            if patience and self.stale >= patience:
                self.stopped = "early stopping"
                self.cb.info(f"Early stopping: no better {self.score_label} for {self.stale} epochs.")
                return

    def train_to_end(self) -> None:
        """:meth:`train`, then refuse a run cancelled before its first epoch ended (there is nothing to write)."""
        from ..tiling.errors import RunCancelled

        self.train()
        if self.best_state is None:
            raise RunCancelled("The run was cancelled before its first epoch ended; no output was written.")

    def _record(self, loss: float, val_loss: float | None, scores: dict[str, Any], rate: float,
                seconds: float) -> None:
        entry = self.entry(loss, val_loss, scores)
        self.history.append({"epoch": self.epoch, "train_loss": loss, **entry, "learning_rate": rate,
                             "seconds": seconds})
        score = entry[self.score_key]
        if score > self.best[self.best_key]:
            self.best = {"epoch": self.epoch, self.best_key: score, "scores": scores}
            self.best_state = self.best_weights()
            self.stale = 0
        else:
            self.stale += 1

    def final_digest(self) -> str:
        """SHA-256 of the last epoch's weights (equal for a resumed and an uninterrupted CPU run)."""
        return weights_digest(self.net.state_dict())


class SupervisedRun(EpochRun):
    """A run on (image, target) items scored by a loss (segmentation: label chips; object classification: one class
    per chip). A subclass sets :attr:`values`, :attr:`names` and :attr:`net`, then calls :meth:`setup`."""

    values: list[int]
    names: list[str]

    def setup(self, data: Any, train_set: Any, validation_set: Any, make_loss: Any) -> None:
        """The loss (``make_loss(class weights or None)``; inverse-frequency weights of ``data.counts["train"]``
        when the request asks for class weighting), the datasets, the optimiser over the training items (a last
        batch of one item is left out: batch norm needs two), then :meth:`resume`."""
        weights = class_weights(data.counts["train"]) if self.request.class_weighting else None
        if weights:
            self.cb.info("Class weights: " + ", ".join(f"{n} {w:.3g}" for n, w in zip(self.names, weights,
                                                                                     strict=True)) + ".")
        self.loss = make_loss(weights).to(self.device)
        self.train_set, self.validation_set = train_set, validation_set
        n, size = len(data.train), self.request.batch_size
        self.n_train = n - (1 if n % size == 1 and n > 1 else 0)
        self.make_optimizer(self.n_train, len(data.validation))
        self.resume()

    def run_epoch(self, step) -> tuple[float, float, dict[str, Any]]:
        self.train_set.epoch = self.epoch
        size = self.request.batch_size
        order = epoch_order(len(self.train_set), self.request.seed, self.epoch)[:self.n_train]
        loss = train_epoch(self.net, batches(self.train_set, order, size), self.loss, self.optimizer, self.scheduler,
                           self.scaler, self.device, self.amp, self.cb, step)
        val_loss, scores = validate(self.net, batches(self.validation_set, range(len(self.validation_set)), size),
                                    self.loss, self.device, self.amp, self.values, self.names, self.cb, step)
        return loss, val_loss, scores
