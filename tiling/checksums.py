"""File checksums: one helper for model packages, archives, fixtures and signed analysis models."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 digest of the file at ``path``, read ``chunk`` bytes (default 1 MiB) at a time."""
    with open(path, "rb") as f:
        return sha256_of_open(f, chunk)


def sha256_of_open(f: BinaryIO, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 digest of the rest of the open binary file ``f``, read ``chunk`` bytes at a time."""
    digest = hashlib.sha256()
    while block := f.read(chunk):
        digest.update(block)
    return digest.hexdigest()
