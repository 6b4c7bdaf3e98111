"""The user's cache folders (extracted package archives, ONNX exports) and the bound on their size.

Each cache folder holds one entry per distinct content (a folder or a file named after a checksum). An entry's
modification time says when it was last used: :func:`mark_used` renews it on every hit. After a new entry is
written, :func:`prune` deletes the least recently used entries until the folder fits its bound
(``$DEEPRASTER_CACHE_LIMIT_GIB``, default :data:`DEFAULT_LIMIT_GIB` GiB per folder). An entry used in the last
:data:`IN_USE_SECONDS` is never deleted (another QGIS or a Dask worker may be reading it), nor is the entry just
written, however large. Without a bound, every package version opened and every model exported stays on disk
forever (one day of development left 6.7 GB).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from ..tiling.removal import remove_aside, remove_path

DEFAULT_LIMIT_GIB = 5.0
"""Default bound of each cache folder, in GiB."""
IN_USE_SECONDS = 86400.0
"""Entries used within this many seconds (a day) are never pruned: a long run's Dask workers, started or restarted
hours after the package was opened, still find its folder. The bound is therefore soft: what was used in the last
day stays even above it."""
STALE_TEMP_SECONDS = 86400.0
"""Leftovers of this module and its writers older than this are removed (see :data:`LEFTOVER`)."""
LEFTOVER = re.compile(r"\.trash-[0-9a-f]{32}|\.extract-.+|\..+\.part")
"""Hidden names the caches' writers use: an entry being deleted, an extraction or an export killed midway."""
ARCHIVE_ENTRY = re.compile(r"[0-9a-f]{64}")
"""Names of the package cache's entries (the archive's SHA-256); nothing else in that folder is ever deleted."""
ONNX_ENTRY = re.compile(r".+-[0-9a-f]{24}\.(onnx|optimized)")
"""Names of the ONNX cache's entries: exports (``<package>-<export key>.onnx``) and graphs optimised for a CPU
(``<export name>-<key>.optimized``, folders)."""

Info = Callable[[str], None]


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/deepraster`` (``~/.cache/deepraster`` when the variable is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deepraster"


def limit_bytes() -> int:
    """The bound of one cache folder in bytes: ``$DEEPRASTER_CACHE_LIMIT_GIB`` (``inf``: no bound) or
    :data:`DEFAULT_LIMIT_GIB`; an unreadable value counts as the default."""
    text = os.environ.get("DEEPRASTER_CACHE_LIMIT_GIB", "")
    try:
        gib = float(text) if text else DEFAULT_LIMIT_GIB
    except ValueError:
        gib = DEFAULT_LIMIT_GIB
    if math.isnan(gib):
        gib = DEFAULT_LIMIT_GIB
    return 2**63 - 1 if math.isinf(gib) and gib > 0 else int(max(gib, 0.0) * 1024**3)


def mark_used(entry: Path) -> None:
    """Record that ``entry`` was used now (its modification time); silently skipped where it cannot be written."""
    with contextlib.suppress(OSError):
        os.utime(entry)


def entry_bytes(entry: Path) -> int:
    """Bytes of a file, or of every file under a folder (links not followed)."""
    if entry.is_symlink() or not entry.is_dir():
        return entry.lstat().st_size
    return sum(p.lstat().st_size for p in entry.rglob("*") if not p.is_dir() or p.is_symlink())


def prune(folder: Path, keep: Path, entry_name: re.Pattern[str], info: Info = lambda message: None,
          limit: int | None = None, now: float | None = None) -> list[Path]:
    """Delete the least recently used entries of ``folder`` (names matching ``entry_name``: nothing else there is
    touched) until they hold at most ``limit`` bytes (default :func:`limit_bytes`); ``keep`` and entries used within
    :data:`IN_USE_SECONDS` stay. Leftovers (:data:`LEFTOVER`) older than :data:`STALE_TEMP_SECONDS` go too. Returns the
    entries deleted. Errors never propagate: a cache that cannot be pruned is left as it is."""
    try:
        limit = limit_bytes() if limit is None else limit
        now = time.time() if now is None else now
        children = list(folder.iterdir())
    except (OSError, ValueError, OverflowError):
        return []
    for stale in children:
        if LEFTOVER.fullmatch(stale.name) and (modified := _modified(stale)) and now - modified > STALE_TEMP_SECONDS:
            remove_entry(stale)
    entries = [(*record, p) for p in children if entry_name.fullmatch(p.name) and (record := _usage(p))]
    total = sum(size for _, size, _ in entries)
    removed: list[Path] = []
    for used, size, entry in sorted(entries, key=lambda item: item[0]):
        if total <= limit:
            break
        if entry == keep or now - used < IN_USE_SECONDS:
            continue
        if remove_entry(entry):
            total -= size
            removed.append(entry)
    if removed:
        info(f"Cache {folder}: {len(removed)} least recently used entries removed to keep it under "
             f"{limit / 1024**3:.1f} GiB (set DEEPRASTER_CACHE_LIMIT_GIB to change the bound).")
    return removed


def _modified(entry: Path) -> float | None:
    """When ``entry`` was last used or written (POSIX time), or None when it cannot be read (another process
    deleting it meanwhile: one such entry never stops the pruning of the others)."""
    try:
        return entry.lstat().st_mtime
    except OSError:
        return None


def _usage(entry: Path) -> tuple[float, int] | None:
    """``(last use as a POSIX time, bytes)`` of an entry, or None when it cannot be read (see :func:`_modified`)."""
    try:
        modified = _modified(entry)
        return None if modified is None else (modified, entry_bytes(entry))
    except OSError:
        return None


def remove_entry(entry: Path) -> bool:
    """Take ``entry`` (a file or a folder) out of the cache in one rename (readers never see half of it, and a
    process that has its files open keeps them), then delete it. False when it cannot be renamed."""
    if entry.name.startswith(".trash-"):
        remove_path(entry)
        return True
    return remove_aside(entry, entry.with_name(f".trash-{uuid.uuid4().hex}"))
