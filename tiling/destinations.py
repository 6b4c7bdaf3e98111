"""The destinations of a run, checked together before any work starts (no QGIS here).

:func:`check_destinations` resolves every output path of a run and refuses, with a message that says what to
change, a destination that cannot be written (missing folder, read-only folder or file, a
folder where a file is expected), two destinations that are the same file, a destination that is one of the run's
input files (or a file an input is made of: the sources of a ``.vrt``, a raster's ``.aux.xml``, ``.ovr`` or world
file, the ``.json`` description of a ``.joblib`` model), and a name whose extension does not match the format
written (a GeoTIFF named ``.png``).

:func:`reserve_destinations` does the same checks and then holds an exclusive lock beside every file destination
for the run's duration: a second run to the same output is refused ("another run is writing this output") instead
of deleting the first run's temporary file. Holding the lock, it removes the hidden temporary files earlier runs
killed at this path left behind (``.<name>.<id>.partial.tif`` of :class:`~tiling.writer.GeoTiffWriter`); the
temporary file a resumable run recorded in its resume state is kept, so that the next run continues from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from osgeo import gdal

from .errors import OutputError

GEOTIFF_EXTENSIONS = (".tif", ".tiff")


@dataclass(frozen=True)
class Destination:
    """One output of a run.

    Args:
        path: where it goes ("" or None: not written this run).
        label: what it is, for messages (the parameter's description).
        kind: ``"geotiff"`` (a raster written as GeoTIFF), ``"file"`` (any other file) or ``"folder"``.
        extensions: accepted extensions for a file (empty: any); the first one is suggested.
    """

    path: str | os.PathLike[str] | None
    label: str = "output"
    kind: str = "file"
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        label = self.label
        if label[1:2].islower():  # "Clusters" → "clusters"; "HTML report" stays
            object.__setattr__(self, "label", label[0].lower() + label[1:])
        if self.kind == "geotiff" and not self.extensions:
            object.__setattr__(self, "extensions", GEOTIFF_EXTENSIONS)


def real_path(path: str | os.PathLike[str]) -> str:
    """``path`` as compared here: absolute, links resolved, case folded where the filesystem ignores case."""
    return os.path.normcase(os.path.realpath(os.path.expanduser(str(path))))




def written_files(path: str | os.PathLike[str]) -> list[str]:
    """The real paths a destination writes: the file itself and the sidecars written with it (the ``.json``
    description of a ``.joblib`` model)."""
    real = real_path(path)
    return [real, real + ".json"] if real.lower().endswith(".joblib") else [real]


def files_of_input(path: str | os.PathLike[str]) -> list[str]:
    """The real paths of the files an input is made of: :func:`written_files`, plus, for a raster GDAL opens, every
    file GDAL lists for it (the sources of a VRT, its own sidecars: ``.aux.xml``, ``.ovr``, ``.msk``, world file).
    Writing any of them would destroy the input."""
    files = written_files(path)
    with contextlib.suppress(RuntimeError):  # not a raster GDAL opens (a model, a table): the file alone
        gdal.PushErrorHandler("CPLQuietErrorHandler")
        try:
            ds = gdal.OpenEx(str(path), gdal.OF_RASTER | gdal.OF_READONLY)
            listed = (ds.GetFileList() or []) if ds is not None else []
        finally:
            ds = None
            gdal.PopErrorHandler()
        files += [real_path(f) for f in listed if not f.startswith("/vsi")]
    return files


def input_files(inputs: Iterable[str | os.PathLike[str] | None], missing_too: bool = False) -> dict[str, str]:
    """Real path → the input it belongs to, for every file the ``inputs`` are made of (:func:`files_of_input`; a
    folder: itself). An input not on disk is left out, or with ``missing_too`` taken as its own path."""
    found: dict[str, str] = {}
    for item in inputs:
        if item in (None, "") or not (missing_too or os.path.exists(str(item))):
            continue
        for real in files_of_input(item) if os.path.isfile(str(item)) else written_files(item):
            found.setdefault(real, str(item))
    return found


def check_destinations(destinations: Iterable[Destination], inputs: Iterable[str | os.PathLike[str] | None] = ()
                       ) -> list[Path]:
    """Check every destination of a run together; return their paths (those given) in order.

    Nothing is created: a missing folder is an error. Raises :class:`OutputError` naming the destination
    and what to change.
    """
    given = [d for d in destinations if d.path not in (None, "")]
    inputs = list(inputs)
    files = input_files(inputs)
    input_folders = {real_path(item): str(item) for item in inputs if item not in (None, "") and os.path.isdir(item)}
    claimed: dict[str, Destination] = {}
    for dest in given:
        for real in written_files(dest.path) if dest.kind != "folder" else [real_path(dest.path)]:
            inside = next((f for f in input_folders if real.startswith(f + os.sep)), None)
            if inside is not None and os.path.exists(real):  # a file of an input folder (a model package)
                files.setdefault(real, input_folders[inside])
            if real in files:
                source = files[real]
                part = "" if real_path(source) == real else f" ({real} is one of the files it is made of)"
                raise OutputError(
                    f"The {dest.label} ({dest.path}) would overwrite the input {source}{part}: the input would be "
                    f"destroyed. Choose another file name for the {dest.label}.")
            other = claimed.get(real)
            if other is not None:
                both = dest.path if real == real_path(dest.path) else f"written to {real}"
                raise OutputError(
                    f"The {other.label} and the {dest.label} are both {both}: one would be lost. Give each "
                    f"output its own file name.")
            claimed[real] = dest
    for dest in given:
        _check_extension(dest)
    for dest in given:
        _check_writable(dest)
    return [Path(d.path) for d in given]


def _check_extension(dest: Destination) -> None:
    if dest.kind == "folder" or not dest.extensions:
        return
    suffix = "".join(Path(str(dest.path)).suffixes[-1:]).lower()
    if suffix not in dest.extensions:
        right = dest.extensions[0]
        what = "a GeoTIFF" if dest.kind == "geotiff" else f"a {right} file"
        named = f"ends in {suffix}" if suffix else "has no extension"
        raise OutputError(
            f"The {dest.label} ({dest.path}) is written as {what}, but its name {named}. Name it "
            f"{Path(str(dest.path)).with_suffix(right).name} (extension {right}).")


def _check_writable(dest: Destination) -> None:
    target = Path(os.path.expanduser(str(dest.path)))
    folder = target if dest.kind == "folder" else (target.parent if str(target.parent) else Path("."))
    if dest.kind != "folder" and target.is_dir():
        raise OutputError(f"The {dest.label} ({target}) is a folder. Give a file name"
                          f"{' ending in ' + dest.extensions[0] if dest.extensions else ''}.")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"Cannot write the {dest.label} ({target}): {folder} is a file, not a folder. Choose "
                          f"another folder.")
    if not folder.is_dir():
        raise OutputError(f"Cannot write the {dest.label} ({target}): the folder {folder} does not exist. Choose an "
                          f"existing folder (a failed run creates nothing, folders included).")
    try:  # try it for real: os.access says yes to root, and knows nothing of locks or immutable folders
        handle, probe = tempfile.mkstemp(prefix=".deepraster-probe-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"Cannot write the {dest.label} ({target}): no permission to write in the folder {folder} "
                          f"({exc.strerror or exc}). Choose another folder.") from exc
    for file in written_files(target) if dest.kind != "folder" else []:  # the file and its sidecars
        if not os.path.isfile(file):
            continue
        try:
            with open(file, "r+b"):
                pass
        except OSError as exc:
            raise OutputError(f"Cannot replace the {dest.label} ({file}): the file is read-only or locked by "
                              f"another program ({exc.strerror or exc}). Close it or choose another file "
                              f"name.") from exc


def partial_files(target: str | os.PathLike[str]) -> list[Path]:
    """The hidden temporary files earlier runs left beside ``target`` (writer partials and their sidecars, folders
    of pieces of a distributed run), except the one a resumable run recorded in its resume state (with that
    state)."""
    target = Path(target)
    keep: set[str] = set()
    state = target.with_name(f".{target.name}.resume.json")
    try:
        temp = json.loads(state.read_text(encoding="utf-8")).get("temp")
        if isinstance(temp, str):
            keep = {temp, temp + ".aux.xml"}
    except (OSError, ValueError, AttributeError):
        pass
    pattern = f".{target.name}.*.partial*"
    return sorted(p for p in target.parent.glob(pattern) if p.name not in keep and (p.is_file() or p.is_dir()))


class _Lock:
    """An exclusive advisory lock on ``.<name>.lock`` beside a destination (released when the process dies)."""

    def __init__(self, target: Path, label: str) -> None:
        self.path = target.with_name(f".{target.name}.lock")
        self.handle = open(self.path, "a+b")  # noqa: SIM115 (held for the run)
        try:
            _lock(self.handle)
            if os.fstat(self.handle.fileno()).st_ino != os.stat(self.path).st_ino:
                raise OSError("the lock file was replaced")  # its holder released it while we opened it
        except OSError as exc:
            self.handle.close()
            raise OutputError(f"Another run is writing the {label} ({target}) right now. Wait for it to finish, "
                              f"or choose another file name.") from exc

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            _unlock(self.handle)
        self.handle.close()


def _lock(handle) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _unlock(handle) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def reserve_destinations(destinations: Sequence[Destination],
                         inputs: Iterable[str | os.PathLike[str] | None] = ()) -> Iterator[list[Path]]:
    """Check the destinations together (:func:`check_destinations`), lock every file destination for the run and
    remove the partial files earlier killed runs left there; the locks go when the block ends, however it ends."""
    paths = check_destinations(destinations, inputs)
    locks: list[_Lock] = []
    try:
        for dest in destinations:
            if dest.path in (None, "") or dest.kind == "folder":
                continue
            target = Path(os.path.expanduser(str(dest.path)))
            locks.append(_Lock(target, dest.label))
            for stale in partial_files(target):
                with contextlib.suppress(OSError):
                    if stale.is_dir():
                        shutil.rmtree(stale)
                    else:
                        stale.unlink()
        yield paths
    finally:
        for lock in reversed(locks):
            lock.release()
