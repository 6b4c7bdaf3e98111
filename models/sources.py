"""One entry point for every way a user names a model: a package folder, its ``model.json``, a ``.drpk`` archive,
an Esri ``.emd`` file or ``.dlpk`` archive."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ModelPackageError
from .package import load_package
from .spec import ARCHIVE_SUFFIX, DESCRIPTION_FILE, ModelPackage

MODEL_FILE_FILTER = "Model packages (model.json *.drpk *.emd *.dlpk);;All files (*)"


def open_model(path: str | os.PathLike[str], verify_checksum: bool = True) -> ModelPackage:
    """The validated package behind ``path``; archives are extracted safely into the cache first."""
    p = Path(path).expanduser()
    suffix = p.suffix.lower()
    if suffix == ".emd":
        from .esri import load_emd

        return load_emd(p)
    if suffix == ".dlpk":
        from .esri import load_dlpk

        return load_dlpk(p)
    if suffix == ARCHIVE_SUFFIX:
        from .archive import extract_archive

        return load_package(extract_archive(p), verify_checksum)
    if p.is_file() and suffix not in (".json",):
        raise ModelPackageError(f"{p} is not a model package: give a package folder, its model.json, a "
                                f"{ARCHIVE_SUFFIX} archive, or an Esri .emd / .dlpk.")
    return load_package(p, verify_checksum)


def is_model_path(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` names a model package rather than, say, a timm model's name: a folder holding
    ``model.json``, or a file named like a package (``.json``, ``.drpk``, ``.emd``, ``.dlpk``), existing or not."""
    p = Path(path).expanduser()
    return p.suffix.lower() in (".json", ARCHIVE_SUFFIX, ".emd", ".dlpk") or (p / DESCRIPTION_FILE).is_file()
