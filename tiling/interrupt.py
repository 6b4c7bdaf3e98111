"""SIGTERM handled like a cancel (no QGIS here).

``qgis_process`` and scripts run an algorithm in the main thread of their process; a ``kill`` (SIGTERM) used to
end them at once, leaving hidden temporary files beside the outputs. :func:`terminate_as_cancel` installs, for the
run's duration, a handler that marks the run cancelled and raises :class:`~tiling.errors.RunCancelled` in the main
thread, so the run unwinds as after a cancel: temporary files removed, older outputs untouched, resumable results
kept. The previous handler comes back when the block ends. In any other thread (QGIS desktop runs algorithms in
worker threads) it does nothing: signal handlers belong to the main thread.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

from .errors import RunCancelled

TERMINATED_MESSAGE = ("The run was stopped (SIGTERM): its outputs were removed, older files at their paths are "
                      "unchanged.")


@contextlib.contextmanager
def terminate_as_cancel(cancel: Callable[[], None] | None = None) -> Iterator[bool]:
    """Within the block, SIGTERM calls ``cancel`` (e.g. the feedback's cancel) and raises RunCancelled; yields
    whether a handler was installed (only in the main thread of the main interpreter)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield False
        return

    def handler(signum, frame) -> None:
        # a second SIGTERM ends the process the usual way
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if cancel is not None:
            with contextlib.suppress(Exception):
                cancel()
        raise RunCancelled(TERMINATED_MESSAGE)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # not the main interpreter
        yield False
        return
    try:
        yield True
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
