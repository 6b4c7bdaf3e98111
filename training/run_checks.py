"""The checks every training request passes before any data is read (segmentation and detection alike)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import TrainingDataError


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
