"""One entry point for every way a user names a model: a package folder, its ``model.json``, a ``.drpk`` archive,
an Esri ``.emd`` file or ``.dlpk`` archive."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import ModelPackageError
from .package import load_package
from .spec import ARCHIVE_SUFFIX, DESCRIPTION_FILE, ModelPackage

MODEL_FILE_FILTER = "Model packages (model.json *.drpk *.emd *.dlpk);;All files (*)"


def open_model(path: str | os.PathLike[str], verify_checksum: bool = True) -> ModelPackage:
    """The validated package behind ``path``; archives are extracted safely into the cache first."""
    p = Path(path).expanduser()
    suffix = p.suffix.lower()
    if not p.exists():
        raise ModelPackageError(f"No model package at {p}: no such file or folder. Choose a package folder, its "
                                f"model.json, a {ARCHIVE_SUFFIX} archive, or an Esri .emd / .dlpk.")
    if suffix == ".emd":
        from .esri import load_emd

        return load_emd(p)
    if suffix == ".dlpk":
        from .esri import load_dlpk

        return load_dlpk(p)
    if suffix == ARCHIVE_SUFFIX:
        from .archive import extract_archive

        return load_package(archive_package_folder(extract_archive(p), p), verify_checksum)
    if p.is_file() and suffix not in (".json",):
        raise ModelPackageError(f"{p} is a {describe_file(p)}, not a model package: give a package folder, its "
                                f"model.json, a {ARCHIVE_SUFFIX} archive, or an Esri .emd / .dlpk.")
    if p.is_dir():
        check_package_folder(p)
    return load_package(p, verify_checksum)


def archive_package_folder(folder: Path, archive: Path) -> Path:
    """The package folder inside an extracted archive: its top level, or its single top folder (an archive made by
    zipping the package folder itself). Otherwise the extracted copy is removed and the error says why."""
    if (folder / DESCRIPTION_FILE).is_file():
        return folder
    entries = list(folder.iterdir())
    if len(entries) == 1 and (entries[0] / DESCRIPTION_FILE).is_file():
        return entries[0]
    shutil.rmtree(folder, ignore_errors=True)
    raise ModelPackageError(
        f"The archive {archive} holds no {DESCRIPTION_FILE} at its top level or in a single top folder, so it is not a "
        f"model package. Re-create it with \"Create model package\", or zip a package folder's files."
    )


def describe_file(path: Path) -> str:
    """A few words on what a file that is not a package seems to be ("text file", "raster file", ...)."""
    head = path.read_bytes()[:512] if path.stat().st_size else b""
    if not head:
        return "empty file"
    if head[:4] in (b"II*\x00", b"MM\x00*") or head.startswith(b"<VRTDataset"):
        return "raster file"
    if b"\x00" not in head:
        return "text file"
    return "file"


def check_package_folder(folder: Path) -> None:
    """Raise a message that names what a folder given as a package lacks (and the package inside it, if one is)."""
    if (folder / DESCRIPTION_FILE).is_file():
        return
    inner = sorted(q.parent for q in folder.glob(f"*/{DESCRIPTION_FILE}"))
    hint = f" It holds a package in {inner[0]}: choose that folder." if len(inner) == 1 else ""
    raise ModelPackageError(
        f"The folder {folder} is not a model package: it holds no {DESCRIPTION_FILE}.{hint} Choose a package folder "
        f"({DESCRIPTION_FILE} beside the weights), its {DESCRIPTION_FILE}, a {ARCHIVE_SUFFIX} archive, or an Esri "
        ".emd / .dlpk."
    )


def is_model_path(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` names a model package rather than, say, a timm model's name: a folder holding
    ``model.json``, or a file named like a package (``.json``, ``.drpk``, ``.emd``, ``.dlpk``), existing or not."""
    p = Path(path).expanduser()
    return p.suffix.lower() in (".json", ARCHIVE_SUFFIX, ".emd", ".dlpk") or (p / DESCRIPTION_FILE).is_file()
