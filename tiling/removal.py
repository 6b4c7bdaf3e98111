"""Removing files and folders, also those another process may be reading at that moment."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def remove_path(path: Path) -> None:
    """Remove a file, or a folder with its contents; nothing when absent."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_aside(path: Path, aside: Path) -> bool:
    """Take ``path`` (a file or a folder) out of the way in one rename to ``aside`` (a reader never sees half of it,
    and a process that has its files open or mapped keeps them), then delete it. False when it cannot be renamed."""
    try:
        os.rename(path, aside)
    except OSError:
        return False
    remove_path(aside)
    return True
