"""Whether a file lies on a local Linux filesystem (read from ``/proc/self/mountinfo``).

Two caches rely on it: the checksum record (:mod:`models.verified_checksums`: a local filesystem's change time moves
on every write) and the optimised ONNX graph (:mod:`models.onnx_optimized`: ONNX Runtime maps its weights into
memory, and a mapped file on a network drive that another computer deletes crashes the process at its next read).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

LOCAL_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "tmpfs", "overlay"})
"""Local Linux filesystems whose change time moves on every write."""
MOUNTINFO = Path("/proc/self/mountinfo")


def on_local_filesystem(device: int, allowed: frozenset[str] = LOCAL_FILESYSTEMS) -> bool:
    """Whether the filesystem of ``device`` (``st_dev``) is one of ``allowed`` (Linux; elsewhere False)."""
    if not sys.platform.startswith("linux"):
        return False
    wanted = f"{os.major(device)}:{os.minor(device)}"
    try:
        lines = MOUNTINFO.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    types = set()
    for line in lines:  # "<id> <parent> <major:minor> <root> <mount point> <options> [optional…] - <type> …"
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) > 2 and parts[2] == wanted and rest:
            types.add(rest.split()[0])
    return bool(types) and types <= allowed
