"""How a long run reports: progress, cancellation and messages as plain callables (QGIS feedback is adapted in
``algorithms/``), so the same loops run under QGIS, in plain Python and in a worker process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import RunCancelled


@dataclass
class Callbacks:
    """How a run reports: ``progress`` gets a fraction 0–1, ``is_cancelled`` is polled between batches, ``info``
    and ``warning`` get log lines (a warning does not stop the run), ``stage`` names the step now running."""

    progress: Callable[[float], None] = lambda fraction: None
    is_cancelled: Callable[[], bool] = lambda: False
    info: Callable[[str], None] = lambda message: None
    warning: Callable[[str], None] = lambda message: None
    stage: Callable[[str], None] = lambda text: None


def sub_callbacks(callbacks: Callbacks | None, start: float, end: float) -> Callbacks:
    """Callbacks reporting progress 0–1 of one stage as ``start``–``end`` of the whole run."""
    cb = callbacks or Callbacks()
    return Callbacks(progress=lambda f: cb.progress(start + (end - start) * min(max(f, 0.0), 1.0)),
                     is_cancelled=cb.is_cancelled, info=cb.info, warning=cb.warning, stage=cb.stage)


def check_cancel(callbacks: Callbacks) -> None:
    """Raise :class:`~tiling.errors.RunCancelled` when the user asked to stop."""
    if callbacks.is_cancelled():
        raise RunCancelled("The run was cancelled; no output was written.")
