"""Checksums of weights files already read, so that an unchanged file is not read again on every run.

Checking a package's weights against its description means reading the whole file: 0.05–0.1 s for the 81 MB of
the ukis-csmask U-Net, on every run, and twice on the PyTorch path (when the package is opened and when the weights
are loaded). A file's digest is recorded with the file's identity on disk (device, inode, size, modification and
change times in ns); while all of them are unchanged the recorded digest is used. Any write to the file, or a new
file in its place, changes the change time, which no user can set back, so a replaced or altered file is always
read again. Only on POSIX systems: on Windows ``st_ctime`` is the creation time, so every check reads the file there.
Whoever can write the user's cache can already change the packages extracted and the exports there: the record
opens no new way in.

The record is one small JSON file in the user's cache (``$XDG_CACHE_HOME/deepraster/verified-checksums.json``) of at
most :data:`MAX_ENTRIES` files, written atomically; two processes writing it at once lose at most an entry, which
costs one more read later.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from ..tiling.checksums import sha256_of
from .cache import cache_home

RECORD_NAME = "verified-checksums.json"
MAX_ENTRIES = 256
"""Files remembered at most (the most recently checked stay)."""


def record_path() -> Path:
    """The record file in the user's cache."""
    return cache_home() / RECORD_NAME


def file_identity(path: Path) -> str | None:
    """The file's identity on disk (device, inode, size, modification and change times in ns); None where no
    identity can be trusted to change with the content (not POSIX, or the file cannot be read)."""
    if os.name != "posix":
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of the file at ``path``: the recorded one while the file is unchanged, else read (and then
    recorded, when the file did not change while it was read)."""
    key = str(Path(path).resolve())
    identity = file_identity(path)
    if identity is None:
        return sha256_of(path)
    record = _read_record()
    entry = record.get(key)
    if isinstance(entry, list) and len(entry) == 2 and entry[0] == identity:
        return str(entry[1])
    digest = sha256_of(path)
    if file_identity(path) == identity:
        record.pop(key, None)
        record[key] = [identity, digest]
        _write_record(dict(list(record.items())[-MAX_ENTRIES:]))
    return digest


def _read_record() -> dict[str, object]:
    try:
        record = json.loads(record_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(record: dict[str, object]) -> None:
    """Replace the record in one rename; a cache that cannot be written is left as it is."""
    target = record_path()
    with contextlib.suppress(OSError):
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{target.name}-", suffix=".part", dir=target.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as f:
                json.dump(record, f)
            os.replace(temp, target)
        finally:
            Path(temp).unlink(missing_ok=True)
