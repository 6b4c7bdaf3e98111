"""Reuse of freed memory during a run (Linux glibc only; a no-op elsewhere).

A CPU forward pass allocates and frees the same large activation buffers (tens of MiB each) for every batch. glibc
hands every block above its mmap threshold (128 KiB, rising to at most 32 MiB) straight to the kernel and takes it
back on free, so each batch page-faults all its activations in again: measured on the ukis U-Net (640 px tiles, 2
cores) the kernel's page zeroing took as much CPU time as the convolutions, and the forward pass ran 2–3× slower
than with the memory kept. Inside :func:`freed_memory_kept` glibc serves large blocks from its heaps and keeps what
is freed; on leaving, the documented defaults are set again and ``malloc_trim`` gives the free memory back to the
system, so the process's size between runs is what it was.

A block larger than a thread heap (64 MiB) in a thread other than the main one is still mapped per call; the
predictor keeps its calls small enough on the CPU (see :mod:`tiling.predictor`). Set ``DEEPRASTER_KEEP_FREED_MEMORY=0``
to switch this off.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

RUN_SETTINGS = {
    M_MMAP_THRESHOLD: 1 << 30,  # bytes: blocks up to 1 GiB come from the heaps, not from fresh mappings
    M_TRIM_THRESHOLD: (1 << 31) - 1,  # bytes: never shrink the heaps during the run
    M_TOP_PAD: 64 << 20,  # bytes: thread heaps (64 MiB) that fall empty are kept, not unmapped
}
DEFAULT_SETTINGS = {  # glibc's documented defaults (mallopt(3)); dynamic mmap threshold adjustment stays off
    M_MMAP_THRESHOLD: 128 << 10,
    M_TRIM_THRESHOLD: 128 << 10,
    M_TOP_PAD: 128 << 10,
}

_lock = threading.Lock()
_active_runs = 0
_tuned = False  # whether the run settings are in force


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (has ``mallopt`` and ``malloc_trim``), else ``None``."""
    if not sys.platform.startswith("linux") or os.environ.get("DEEPRASTER_KEEP_FREED_MEMORY", "1") == "0":
        return None
    return _loaded_libc()


@functools.lru_cache(maxsize=1)
def _loaded_libc() -> ctypes.CDLL | None:
    """The C library this process already uses, looked up in its own symbols (``ctypes.util.find_library`` would
    run ``ldconfig`` at every run's start)."""
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _apply(libc: ctypes.CDLL, settings: dict[int, int]) -> bool:
    """Set every ``mallopt`` parameter (even after one is refused); ``True`` when glibc accepted all of them."""
    accepted = [libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1 for param, value in settings.items()]
    return all(accepted)


@contextmanager
def freed_memory_kept() -> Iterator[bool]:
    """Keep freed memory for reuse while inside; yields whether the tuning is active. Re-entrant and shared by
    concurrent runs: the defaults come back, and free memory is returned, when the last run leaves."""
    global _active_runs, _tuned
    libc = _glibc()
    if libc is None:
        yield False
        return
    with _lock:
        _active_runs += 1
        if _active_runs == 1:
            _tuned = _apply(libc, RUN_SETTINGS)
        active = _tuned
    try:
        yield active
    finally:
        with _lock:
            _active_runs -= 1
            if _active_runs == 0:
                _apply(libc, DEFAULT_SETTINGS)
                _tuned = False
                libc.malloc_trim(ctypes.c_size_t(0))
