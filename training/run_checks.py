"""What every training request has (segmentation, detection, object classification alike): the shared fields and
the checks they pass before any data is read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TrainingDataError


@dataclass(kw_only=True)
class RunRequest:
    """The fields of every training request (keyword-only; a request adds its data folder and network)."""

    output: Path
    """The model package to write (``.drpk``)."""
    report_html: Path | None = None
    report_json: Path | None = None
    epochs: int = 20
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    patience: int = 5
    """Epochs without a better validation score (the run's own) before the run stops (0: never stop early)."""
    seed: int = 0
    device: str = "auto"
    validation_fraction: float = 0.2
    """Fraction of the items drawn as validation when the folder has no split of its own (Esri's, VOC)."""
    name: str = ""
    license: str = "unknown"
    inputs: tuple[str, ...] = field(default_factory=tuple)


@dataclass(kw_only=True)
class InitialWeights:
    """Where a network's weights start (segmentation and object classification requests): random when neither is
    given."""

    initial_package: Path | None = None
    """A model package whose weights start the training (its bands and normalisation are used)."""
    initial_weights: Path | None = None
    """A weights file (safetensors or a state dict) that starts the training: see ``initial_part``."""
    initial_part: str = "encoder"
    """What ``initial_weights`` starts: "network" (the whole network, same architecture) or "encoder"."""
    trust_weights: bool = False
    """Open ``initial_weights`` even when it is a pickle (which can run code when opened)."""
    new_bands: str = "mean"
    """First-layer filters of chip bands the initial weights lack: "mean" of the pretrained filters (all scaled by
    pretrained ÷ chip bands, as timm's adapt_input_conv) or "zero" (the kept bands then respond as before)."""


def _listed(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def check_run_request(request: Any, counts: dict[str, int], rate_example: str,
                      schedules: Sequence[str] | None = None) -> None:
    """Refuse, in this order: a count of ``counts`` (name → value, e.g. "Epochs", "batch size") below 1; a
    ``request.learning_rate`` not above 0 (the message suggests ``rate_example``); a ``request.schedule`` not in
    ``schedules`` (not checked when None); a ``request.output`` that is not a ``.drpk`` file."""
    if any(n < 1 for n in counts.values()):
        raise TrainingDataError(f"{_listed(list(counts))} must be at least 1.")
    if not request.learning_rate > 0:
        raise TrainingDataError(f"The learning rate must be positive (e.g. {rate_example}).")
    if schedules is not None and request.schedule not in schedules:
        raise TrainingDataError(f"Unknown schedule {request.schedule!r}: choose one of {', '.join(schedules)}.")
    if Path(request.output).suffix.lower() != ".drpk":
        raise TrainingDataError(f"The model package must be a .drpk file, not {Path(request.output).name}.")
