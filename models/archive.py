"""Safe extraction of package archives (our ``.drpk`` and Esri's ``.dlpk``, both plain zip files).

Every member is checked before anything is written: no absolute paths, no ``..``, no drive letters, no symbolic
links or other special files, a bounded number of members, a bounded total size and compression ratio (zip bombs).
Archives are extracted once into a cache folder named after their SHA-256, through a temporary folder renamed at the
end, so a damaged or interrupted extraction is never used and nothing is written outside the cache.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from ..tiling.checksums import sha256_of
from .cache import ARCHIVE_ENTRY, cache_home, mark_used, prune
from .errors import ModelPackageError

MAX_MEMBERS = 10_000
MAX_TOTAL_BYTES = 8 * 1024**3  # 8 GiB uncompressed
MAX_RATIO = 200  # uncompressed ÷ compressed size of one member


def cache_root() -> Path:
    """Where extracted archives live: ``$DEEPRASTER_CACHE_DIR``, else ``packages`` in :func:`cache.cache_home`."""
    base = os.environ.get("DEEPRASTER_CACHE_DIR")
    return Path(base) if base else cache_home() / "packages"


def _check_member(info: zipfile.ZipInfo, archive: Path) -> PurePosixPath:
    """The member's safe relative path; raises for anything that could escape the target or is not a plain file."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    mode = info.external_attr >> 16
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in path.parts:
        raise ModelPackageError(f"{archive} is refused: member {info.filename!r} points outside the archive's folder "
                                "(path traversal). Only use archives from a source you trust.")
    kind = stat.S_IFMT(mode)  # 0 when the archiver stored permissions only: a plain file
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        raise ModelPackageError(f"{archive} is refused: member {info.filename!r} is a symbolic link or special file.")
    if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 1024**2:
        raise ModelPackageError(f"{archive} is refused: member {info.filename!r} expands {info.file_size} bytes from "
                                f"{info.compress_size} (more than {MAX_RATIO}×: a zip bomb?).")
    return path


def check_archive(archive: Path) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Validate every member of a zip archive; returns the members with their safe paths."""
    try:
        with zipfile.ZipFile(archive) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelPackageError(f"{archive} is not a readable zip archive ({exc}).") from exc
    if len(infos) > MAX_MEMBERS:
        raise ModelPackageError(f"{archive} holds {len(infos)} members; more than {MAX_MEMBERS} is refused.")
    total = sum(i.file_size for i in infos)
    if total > MAX_TOTAL_BYTES:
        raise ModelPackageError(f"{archive} would expand to {total / 1024**3:.1f} GiB; more than "
                                f"{MAX_TOTAL_BYTES / 1024**3:.0f} GiB is refused.")
    return [(info, _check_member(info, archive)) for info in infos]


def extract_archive(archive: str | os.PathLike[str]) -> Path:
    """Extract a package archive into the cache (once per distinct content) and return the folder; the cache is
    then pruned to its bound (:mod:`models.cache`)."""
    archive = Path(archive)
    if not archive.is_file():
        raise ModelPackageError(f"The package archive {archive} does not exist.")
    members = check_archive(archive)
    target = cache_root() / sha256_of(archive)
    if target.is_dir():
        mark_used(target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as z:
            for info, rel in members:
                destination = staging.joinpath(*rel.parts)
                if info.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(destination, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1024**2)
                    copied = dst.tell()
                if copied != info.file_size:
                    raise ModelPackageError(f"{archive}: member {info.filename!r} is damaged (size mismatch).")
        try:
            staging.rename(target)
        except OSError:  # another process extracted the same archive meanwhile
            if not target.is_dir():
                raise
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:
        raise ModelPackageError(f"Cannot extract {archive} ({type(exc).__name__}: {exc}).") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    prune(target.parent, keep=target, entry_name=ARCHIVE_ENTRY)
    return target


def write_archive(folder: Path, archive: Path) -> Path:
    """Zip the files of a package folder (flat paths relative to it) into ``archive``, via a temporary name."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    tmp = archive.with_name(f".{archive.name}.partial")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for path in files:
                z.write(path, path.relative_to(folder).as_posix())
        os.replace(tmp, archive)
    finally:
        tmp.unlink(missing_ok=True)
    return archive
