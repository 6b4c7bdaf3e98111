"""The Deep Raster model package on disk: a folder with ``model.json`` beside the weights (docs/model-package.md).

``load_package`` reads and validates a description into a frozen :class:`ModelPackage`
(:mod:`deepraster.models.description` does the validation); ``verify_weights`` checks the weights file against its
checksum; ``save_package`` writes weights (safetensors) and a description. No torch import at module level: reading
a description must work where torch is missing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..tiling.checksums import sha256_of
from .description import parse_description
from .errors import ModelPackageError
from .spec import DESCRIPTION_FILE, FORMAT_NAME, FORMAT_VERSION, ModelPackage
from .verified_checksums import file_sha256


def resolve_description_file(path: str | os.PathLike[str]) -> Path:
    """The ``model.json`` of a package given as its folder or as the JSON file itself."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / DESCRIPTION_FILE
    if not p.is_file():
        raise ModelPackageError(
            f"No model package at {path}: expected a package folder containing {DESCRIPTION_FILE}, "
            f"or the {DESCRIPTION_FILE} file itself."
        )
    return p.resolve()


def load_package(path: str | os.PathLike[str], verify_checksum: bool = True) -> ModelPackage:
    """Read, validate and return the package at ``path`` (folder or ``model.json``)."""
    json_file = resolve_description_file(path)
    try:
        raw = json.loads(json_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelPackageError(f"{json_file} is not valid JSON ({exc}). Fix the file or re-create the package.") \
            from exc
    if not isinstance(raw, dict):
        raise ModelPackageError(f"{json_file} must hold a JSON object, found {type(raw).__name__}.")
    package = parse_description(raw, json_file.parent)
    if verify_checksum:
        verify_weights(package)
    return package


def verify_weights(package: ModelPackage) -> None:
    """Raise when the weights file is missing or its checksum differs from the description (a file unchanged since
    it was last read is not read again: :mod:`models.verified_checksums`)."""
    if not package.weights_file.is_file():
        raise ModelPackageError(
            f"The weights file {package.weights_file} named by package {package.name!r} is missing. "
            "Copy the complete package folder, or re-create the package."
        )
    if package.weights_sha256 and file_sha256(package.weights_file) != package.weights_sha256.lower():
        raise ModelPackageError(
            f"The weights file {package.weights_file} does not match the checksum in {DESCRIPTION_FILE} "
            "(corrupt or replaced). Download or copy the package again."
        )


def save_package(folder: Path, description: dict[str, Any], state_dict: Mapping[str, Any]) -> Path:
    """Write ``weights.safetensors`` and ``model.json`` (with the weights checksum) into ``folder``.

    The description is validated before anything is written; files are written under temporary names and renamed.
    """
    from safetensors.torch import save_file  # local import: torch is only needed when writing weights

    folder = Path(folder)
    description = dict(description)
    description.setdefault("format", FORMAT_NAME)
    description.setdefault("format_version", FORMAT_VERSION)
    description["weights"] = {"file": "weights.safetensors", "format": "safetensors", "sha256": ""}
    parse_description({**description, "weights": {"file": "weights.safetensors"}}, folder)  # fail before writing
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    weights = folder / "weights.safetensors"
    tmp = _temp_path(weights)
    try:
        save_file(tensors, str(tmp), metadata={"format": FORMAT_NAME})
        description["weights"]["sha256"] = sha256_of(tmp)
        os.replace(tmp, weights)
    finally:
        tmp.unlink(missing_ok=True)
    write_json_atomic(folder / DESCRIPTION_FILE, description)
    return folder


def save_package_file(folder: Path, description: Mapping[str, Any], weights: Path, name: str) -> Path:
    """Copy the weights file ``weights`` as it is (TorchScript, a kept pickle) into ``folder`` as ``name`` and write
    ``model.json`` with its checksum; the description is validated before and after the copy."""
    import shutil

    folder = Path(folder)
    description = {**description, "weights": {**dict(description.get("weights", {})), "file": name}}
    parse_description(description, folder)  # fail before writing
    folder.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(folder / name)
    try:
        shutil.copyfile(weights, tmp)
        description["weights"]["sha256"] = sha256_of(tmp)
        os.replace(tmp, folder / name)
    finally:
        tmp.unlink(missing_ok=True)
    parse_description(description, folder)
    write_json_atomic(folder / DESCRIPTION_FILE, description)
    return folder


def write_staged(output: Path, write: Callable[[Path], Any], check: Callable[[ModelPackage], Any] | None = None
                 ) -> Path:
    """Write a package through ``write(folder)`` to ``output`` (a folder, or a ``.drpk`` file written from a staging
    folder beside it, removed afterwards, whatever happens), read it back and run it through ``check`` (e.g. loaded
    strictly and run once) before the archive is complete; returns its path. A folder ``output`` must be new, empty
    or a package already."""
    import shutil

    from .archive import write_archive
    from .spec import ARCHIVE_SUFFIX

    output = Path(output)
    archive = output if output.suffix.lower() == ARCHIVE_SUFFIX else None
    folder = output.with_name(f".{output.stem}.staging") if archive else output
    if archive:
        shutil.rmtree(folder, ignore_errors=True)
    elif folder.exists() and any(folder.iterdir()) and not (folder / DESCRIPTION_FILE).is_file():
        raise ModelPackageError(f"{folder} exists and is not a model package: choose an empty or new folder.")
    try:
        write(folder)
        if check is not None:
            check(load_package(folder))
        return write_archive(folder, archive) if archive else folder
    finally:
        if archive:
            shutil.rmtree(folder, ignore_errors=True)


def write_checked_package(output: Path, description: Mapping[str, Any], state: Mapping[str, Any],
                          check: Callable[[ModelPackage], Any]) -> Path:
    """Write a package with safetensors ``state`` (a folder, or a ``.drpk`` file): the description validated, the
    weights saved, the package read back and run through ``check`` (e.g. loaded strictly and run once) before the
    folder or archive is complete; returns its path."""
    return write_staged(output, lambda folder: save_package(folder, dict(description), state), check)


def _temp_path(target: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    os.chmod(name, 0o644)  # mkstemp creates 0600; packages are meant to be shared
    return Path(name)


def write_json_atomic(target: Path, data: Mapping[str, Any]) -> None:
    """Write JSON to a temporary file beside ``target`` and rename it into place."""
    tmp = _temp_path(target)
    try:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
