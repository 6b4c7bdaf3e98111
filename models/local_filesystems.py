"""Whether a file lies on a local Linux filesystem (read from ``/proc/self/mountinfo``).

Two caches rely on it: the checksum record (:mod:`models.verified_checksums`: a local filesystem's change time moves
on every write) and the optimised ONNX graph (:mod:`models.onnx_optimized`: ONNX Runtime maps its weights into
memory, and a mapped file on a network drive that another computer deletes crashes the process at its next read).

The filesystem of a path is that of the longest mount point above it (as ``findmnt -T`` finds it), not the one whose
device number equals the file's ``st_dev``: btrfs gives every subvolume a device number of its own that mountinfo
does not list.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

LOCAL_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "tmpfs", "overlay"})
"""Local Linux filesystems whose change time moves on every write."""
MOUNTINFO = Path("/proc/self/mountinfo")
_ESCAPED = re.compile(r"\\([0-7]{3})")


def filesystem_type(path: str | os.PathLike[str]) -> str | None:
    """The type (``ext4``, ``nfs4``, …) of the filesystem holding ``path`` (symbolic links resolved); None outside
    Linux or where the mount table cannot be read."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        real = os.path.realpath(path)
        lines = MOUNTINFO.read_text(encoding="utf-8", errors="replace").splitlines()
    except (OSError, ValueError):
        return None
    found: tuple[int, str] | None = None
    for line in lines:  # "<id> <parent> <major:minor> <root> <mount point> <options> [optional…] - <type> …"
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not rest:
            continue
        mount = _ESCAPED.sub(lambda m: chr(int(m.group(1), 8)), parts[4])  # "\040" for a space, …
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and (found is None or len(mount) >= found[0]):  # equal length: the later mount hides the earlier
            found = (len(mount), rest.split()[0])
    return found[1] if found else None


def on_local_filesystem(path: str | os.PathLike[str], allowed: frozenset[str] = LOCAL_FILESYSTEMS) -> bool:
    """Whether ``path`` lies on a filesystem of one of the types ``allowed`` (Linux; elsewhere False)."""
    return filesystem_type(path) in allowed
