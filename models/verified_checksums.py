"""Checksums of weights files already read, so that an unchanged file is not read again on every run.

Checking a package's weights against its description means reading the whole file: 0.05–0.1 s for the 81 MB of
the ukis-csmask U-Net, on every run, and twice on the PyTorch path (when the package is opened and when the weights
are loaded). A file's digest is recorded with the file's identity on disk (device, inode, size, modification and
change times in ns); while the identity is unchanged, and for at most :data:`TRUST_SECONDS`, the recorded digest is
used. Any write to a file, or a new file in its place, moves its change time, which no user can set back, so a
replaced or altered file is read again. That holds only where the filesystem keeps a real change time: the record is
used on Linux for files on the filesystems in :data:`TRUSTED_FILESYSTEMS` (not on FAT/exFAT sticks, network or FUSE
drives, nor on Windows or macOS: every check reads the file there). A file that decays without being written (bit
rot) keeps its identity: it is caught at the first check after :data:`TRUST_SECONDS`. A file changed within
:data:`RACY_SECONDS` of being read is not recorded (a write in the same clock tick could go unseen).

The record is one small JSON file in the user's cache (``$XDG_CACHE_HOME/deepraster/verified-checksums.json``) of at
most :data:`MAX_ENTRIES` files, written atomically; two processes writing it at once lose at most an entry, which
costs one more read later. Whoever can write the user's cache can already change the packages extracted and the
exports there: the record opens no new way in.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import BinaryIO

from ..tiling.checksums import sha256_of_open
from .cache import cache_home
from .local_filesystems import LOCAL_FILESYSTEMS, on_local_filesystem

RECORD_NAME = "verified-checksums.json"
MAX_ENTRIES = 256
"""Files remembered at most (the most recently checked stay)."""
TRUST_SECONDS = 7 * 86400.0
"""A recorded digest is used for at most a week; then the file is read again."""
RACY_SECONDS = 2.0
"""A file modified or changed this recently when it is read is not recorded."""
TRUSTED_FILESYSTEMS = LOCAL_FILESYSTEMS
"""Filesystems whose change time moves on every write."""


def record_path() -> Path:
    """The record file in the user's cache."""
    return cache_home() / RECORD_NAME


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of the file at ``path``: the recorded one while the file is unchanged (see the module), else
    read, and recorded when the file did not change while it was read."""
    with open(path, "rb") as f:  # one open file for the identity and the bytes: a path swapped meanwhile is no matter
        before = os.fstat(f.fileno())
        key = str(Path(path).resolve())
        trusted = _trusted_path(Path(path))
        record = _read_record() if trusted else {}
        entry = record.get(key)
        if (isinstance(entry, list) and len(entry) == 3 and entry[0] == _identity(before)
                and 0 <= time.time() - float(entry[2]) < TRUST_SECONDS):
            return str(entry[1])
        hexdigest = _read_digest(f)
        after = os.fstat(f.fileno())
    now = time.time()
    settled = now - max(after.st_mtime, after.st_ctime) > RACY_SECONDS
    if trusted and settled and _identity(after) == _identity(before):
        record.pop(key, None)
        record[key] = [_identity(after), hexdigest, now]
        _write_record(dict(list(record.items())[-MAX_ENTRIES:]))
    return hexdigest


def _read_digest(f: BinaryIO) -> str:
    """Hex SHA-256 of the open file ``f`` (a seam for tests that count the files read)."""
    return sha256_of_open(f)


def _identity(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _trusted_path(path: Path) -> bool:
    """Whether ``path`` lies on a filesystem of :data:`TRUSTED_FILESYSTEMS` (Linux; elsewhere False)."""
    return on_local_filesystem(path, TRUSTED_FILESYSTEMS)


def _read_record() -> dict[str, object]:
    try:
        record = json.loads(record_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(record: dict[str, object]) -> None:
    """Replace the record in one rename; a cache that cannot be written is left as it is."""
    from .package import write_json_atomic  # package.py imports this module to verify weights

    target = record_path()
    with contextlib.suppress(OSError):
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(target, record)
