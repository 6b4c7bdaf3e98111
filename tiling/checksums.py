"""File checksums: one helper for model packages, archives, fixtures and signed analysis models."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 digest of the file at ``path``, read ``chunk`` bytes (default 1 MiB) at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
