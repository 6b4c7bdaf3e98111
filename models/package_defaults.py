"""The inference defaults of a model package (tile size, overlap, input value scale), read cheaply: the description
only (``model.json``, or an Esri ``.emd``), also from inside a ``.drpk`` / ``.dlpk`` archive without extracting it.
No weights are read, no checksum is computed and torch is never imported, so a dialog can call this on every change
of a path that is still being typed; a path that names no readable package gives ``None``, never an exception.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .description import parse_description
from .errors import ModelPackageError
from .esri import ESRI_VALUE_SCALE, emd_tiling
from .package import load_package
from .spec import ARCHIVE_SUFFIX, DESCRIPTION_FILE

MAX_DESCRIPTION_BYTES = 8 * 1024**2
"""A description larger than this is not read (no package's is; a wrong file could be huge)."""


@dataclass(frozen=True)
class InferenceDefaults:
    """What a run uses when the tile size, overlap and value scale are left to the package."""

    tile_size: int
    overlap: int
    value_scale: float


def inference_defaults(path: str | os.PathLike[str] | None) -> InferenceDefaults | None:
    """The defaults of the package at ``path`` (as :func:`sources.open_model` accepts it), or ``None`` when ``path``
    is empty or names nothing readable as a package (missing, half-typed, invalid, not a package)."""
    if not path or not str(path).strip():
        return None
    try:
        return _read(Path(path).expanduser())
    except (ModelPackageError, OSError, ValueError, TypeError, RuntimeError, zipfile.BadZipFile):
        # JSON errors are ValueErrors; an encrypted or deeply nested member, RuntimeErrors
        return None


def _read(p: Path) -> InferenceDefaults | None:
    suffix = p.suffix.lower()
    if suffix == ".emd":
        return _from_emd(_json(p.read_bytes()), p.name)
    if suffix == ".dlpk":
        name, raw = _archive_member(p, _root_emd)
        return _from_emd(raw, name)
    if suffix == ARCHIVE_SUFFIX:
        _, raw = _archive_member(p, _description_member)
        package = parse_description(raw, p.parent)
    elif p.is_dir() or suffix == ".json":
        package = load_package(p, verify_checksum=False)
    else:
        return None
    return InferenceDefaults(package.tile_size, package.overlap, package.value_scale)


def _from_emd(emd: Any, source: str) -> InferenceDefaults | None:
    if not isinstance(emd, dict):
        return None
    tile, overlap = emd_tiling(emd, source)
    return InferenceDefaults(tile, overlap, ESRI_VALUE_SCALE)


def _json(data: bytes) -> Any:
    if len(data) > MAX_DESCRIPTION_BYTES:
        raise ValueError("too large for a description")
    return json.loads(data.decode("utf-8-sig"))


def _archive_member(archive: Path, choose) -> tuple[str, Any]:
    """The name and parsed JSON of the member ``choose(names)`` picks in a zip archive."""
    with zipfile.ZipFile(archive) as z:
        name = choose(z.namelist())
        if name is None or z.getinfo(name).file_size > MAX_DESCRIPTION_BYTES:
            raise ValueError(f"{archive}: no description")
        return PurePosixPath(name).name, _json(z.read(name))


def _description_member(names: list[str]) -> str | None:
    """``model.json`` at the top of a ``.drpk``, or in its single top folder (see :func:`sources.open_model`)."""
    if DESCRIPTION_FILE in names:
        return DESCRIPTION_FILE
    tops = {name.split("/", 1)[0] for name in names}
    nested = f"{next(iter(tops))}/{DESCRIPTION_FILE}" if len(tops) == 1 else None
    return nested if nested in names else None


def _root_emd(names: list[str]) -> str | None:
    """The single ``.emd`` at the root of a ``.dlpk`` (see :func:`esri.load_dlpk`)."""
    emds = [name for name in names if "/" not in name and name.lower().endswith(".emd")]
    return emds[0] if len(emds) == 1 else None
