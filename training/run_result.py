"""What a training run hands back (segmentation and detection alike)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class RunResult:
    """What the run wrote and how it went."""

    package: Path
    best_epoch: int
    epochs_run: int
    stopped: str
    history: list[dict[str, Any]]
    validation: dict[str, Any]
    final_weights_sha256: str
    resumed_from: int

    @classmethod
    def of(cls, run: Any, package: Path, validation: dict[str, Any], digest: str) -> RunResult:
        """The result of ``run`` (a :class:`training.epochs.EpochRun`) that wrote ``package``."""
        return cls(package, run.best["epoch"], len(run.history), run.stopped, run.history, validation, digest,
                   run.resumed_from)
