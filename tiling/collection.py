"""A raster collection run through one algorithm, input by input (no QGIS here).

A collection is a folder (file patterns, optionally recursive), a list of rasters, or the source files of a VRT
mosaic. Each input gets its own outputs in one output folder, named after it (``scene.tif`` → ``scene.tif``; an
extra output ``scene_probabilities.tif``); two inputs with the same name get ``_2``, ``_3`` ... Every input is
checked before any runs (readable by GDAL, enough bands for the model), and a failure of one input is recorded
and the others still run: :func:`run_items` runs them, :mod:`tiling.collection_report` writes the summary table
and the VRT mosaic.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from osgeo import gdal

from .callbacks import Callbacks
from .destinations import input_files, real_path
from .errors import DeepRasterError, OutputError, RasterInputError, RunCancelled
from .source import RasterSource

DEFAULT_PATTERNS = "*.tif;*.tiff"
SIDECAR_SUFFIXES = (".aux.xml", ".ovr", ".msk", ".lock", ".json", ".partial")
"""Files beside rasters that are never inputs, whatever the pattern."""
STATUSES = ("pending", "ok", "failed", "cancelled")


@dataclass
class CollectionItem:
    """One input of a collection and what became of it: ``status`` one of :data:`STATUSES`, ``seconds`` of wall
    time, ``message`` why it failed (or a note), ``outputs`` the files it writes by output name."""

    input: str
    name: str
    outputs: dict[str, str] = field(default_factory=dict)
    main: str = ""
    status: str = "pending"
    seconds: float = 0.0
    message: str = ""
    band_count: int | None = None


@dataclass(frozen=True)
class BandNeed:
    """How many bands each input must have: at least ``count`` (exactly, when ``exact``), for ``what`` (e.g. "the
    model ukis-csmask-6b-l1c (B02, B03, ...)")."""

    count: int
    exact: bool
    what: str


def split_patterns(text: str | None) -> list[str]:
    """File patterns from ``"*.tif; *.jp2"`` (``;``, ``,`` or spaces between them); the default when empty."""
    items = [p for chunk in (text or DEFAULT_PATTERNS).replace(",", ";").split(";") for p in chunk.split()]
    return items or split_patterns(DEFAULT_PATTERNS)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    lower = name.lower()
    return any(fnmatch.fnmatch(lower, p.lower()) for p in patterns)


def find_rasters(folder: str | os.PathLike[str], patterns: Sequence[str], recursive: bool = False) -> list[Path]:
    """The files of ``folder`` (and its subfolders when ``recursive``) whose name matches a pattern, sorted; hidden
    files and sidecars (.aux.xml, .ovr, ...) left out. Raises :class:`RasterInputError` for a missing or empty
    folder."""
    root = Path(folder)
    if not root.is_dir():
        raise RasterInputError(f"The input folder {root} does not exist (or is not a folder). Choose a folder of "
                               "rasters.")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and not name.lower().endswith(SIDECAR_SUFFIXES) and _matches(name, patterns):
                found.append(Path(dirpath) / name)
        if not recursive:
            break
    if not found:
        where = " or its subfolders" if recursive else ""
        raise RasterInputError(f"The folder {root}{where} holds no file matching {'; '.join(patterns)}. Choose "
                               "another folder or pattern (e.g. *.tif;*.jp2).")
    return sorted(found)


def vrt_sources(path: str | os.PathLike[str]) -> list[str]:
    """The source files of a VRT mosaic, in its order. Raises :class:`RasterInputError` when it is not a VRT GDAL
    can open or has no source file."""
    try:
        ds = gdal.Open(str(path), gdal.GA_ReadOnly)
    except RuntimeError as exc:
        raise RasterInputError(f"Cannot open the VRT {path} ({exc}). Choose a .vrt mosaic GDAL can read.") from exc
    if ds is None or ds.GetDriver().ShortName != "VRT":
        raise RasterInputError(f"{path} is not a VRT mosaic. Choose a .vrt file (e.g. made by Build virtual raster).")
    own = os.path.realpath(str(path))
    sources = [f for f in (ds.GetFileList() or []) if os.path.realpath(f) != own]
    if not sources:
        raise RasterInputError(f"The VRT {path} names no source file. Choose a VRT mosaic of raster files.")
    return list(dict.fromkeys(sources))


def gather_inputs(folder: str | None = None, patterns: Sequence[str] = (), recursive: bool = False,
                  rasters: Iterable[str] = (), vrt: str | None = None) -> list[str]:
    """Every input of the collection: the folder's matches, then the listed rasters, then the VRT's sources; each
    file once. Raises :class:`RasterInputError` when nothing was given."""
    inputs: list[str] = []
    if folder:
        inputs += [str(p) for p in find_rasters(folder, patterns or split_patterns(None), recursive)]
    inputs += [str(r).split("|", 1)[0] for r in rasters if r]
    if vrt:
        inputs += vrt_sources(vrt)
    if not inputs:
        raise RasterInputError("The collection is empty: choose an input folder, a list of rasters or a VRT "
                               "mosaic.")
    seen: dict[str, str] = {}
    for item in inputs:
        seen.setdefault(os.path.realpath(item), item)
    return list(seen.values())


def plan_items(inputs: Sequence[str], out_folder: str | os.PathLike[str], main: tuple[str, str],
               extras: Sequence[tuple[str, str, str]] = (), reserved: Sequence[str] = ()) -> list[CollectionItem]:
    """One item per input with its output paths: the main output ``(name, extension)`` as ``<input name><ext>``,
    each extra ``(name, suffix, extension)`` as ``<input name>_<suffix><ext>``. The input name is the file name
    without its last extension (``S2_2020.01.05.tif`` → ``S2_2020.01.05``); ``_2``, ``_3``, … is added where any
    output of an input would have the name of another's output or of a ``reserved`` file (the run's reports)."""
    folder = Path(out_folder)
    taken = {name.lower() for name in reserved}
    items = []
    for path in inputs:
        stem = Path(path).stem or "raster"
        for n in itertools.count(1):
            name = stem if n == 1 else f"{stem}_{n}"
            names = [f"{name}{main[1]}", *(f"{name}_{suffix}{ext}" for _, suffix, ext in extras)]
            if not any(file.lower() in taken for file in names):
                break
        taken.update(file.lower() for file in names)
        outputs = {main[0]: str(folder / names[0])}
        outputs.update({key: str(folder / file) for (key, _, _), file in zip(extras, names[1:], strict=True)})
        items.append(CollectionItem(str(path), name, outputs, outputs[main[0]]))
    return items


def check_output_folder(out_folder: str | os.PathLike[str], items: Sequence[CollectionItem],
                        folder: str | None = None, patterns: Sequence[str] = (), recursive: bool = False,
                        reports: Sequence[str] = (), sources: Sequence[str] = ()) -> None:
    """Refuse an output folder whose outputs or ``reports`` (file names in it) would overwrite an input or a file
    one is made of (also of ``sources``: the VRT the inputs were listed from), or (inside the searched input folder)
    would be taken as inputs by the next run over that folder. Raises :class:`OutputError`."""
    out = Path(os.path.realpath(str(out_folder)))
    if out.exists() and not out.is_dir():
        raise OutputError(f"The output folder {out_folder} is a file. Choose a folder.")
    inputs = input_files([*(item.input for item in items), *sources], missing_too=True)
    written = [p for item in items for p in item.outputs.values()] + [str(out / name) for name in reports]
    for path in written:
        if real_path(path) in inputs:
            raise OutputError(
                f"The output {path} would overwrite the input {inputs[real_path(path)]} (or a file it is made of): "
                "the output folder holds the inputs. Choose another output folder (e.g. a new folder beside them).")
    if not folder:
        return
    root = Path(os.path.realpath(folder))
    searched = out == root or (recursive and root in out.parents)
    names = [Path(p).name for p in written]
    clash = next((n for n in names if _matches(n, patterns or split_patterns(None))), None)
    if searched and clash:
        raise OutputError(
            f"The output folder {out_folder} is inside the input folder {folder}, and outputs such as {clash} "
            f"match the pattern {'; '.join(patterns)}: the next run over the folder would take them as inputs. "
            "Choose an output folder outside the input folder.")


def preflight(item: CollectionItem, need: BandNeed | None = None) -> None:
    """Open the input and check its band count; a problem marks the item ``failed`` with a message for it."""
    try:
        item.band_count = RasterSource.open(item.input).band_count
    except DeepRasterError as exc:
        item.status, item.message = "failed", str(exc)
        return
    if need is not None and (item.band_count < need.count or need.exact and item.band_count != need.count):
        item.status = "failed"
        item.message = (f"it has {item.band_count} band{'s' * (item.band_count != 1)}; "
                        f"{need.what} needs {'exactly ' if need.exact else ''}{need.count}. Remove it from the "
                        "collection, or give the band numbers to use.")


def band_count_note(items: Sequence[CollectionItem]) -> str | None:
    """A line saying which inputs have which band count, when they differ (None when all agree)."""
    counts: dict[int, list[str]] = {}
    for item in items:
        if item.band_count is not None:
            counts.setdefault(item.band_count, []).append(Path(item.input).name)
    if len(counts) < 2:
        return None
    parts = [f"{count} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
             for count, names in sorted(counts.items())]
    return f"The rasters of the collection have different band counts: {'; '.join(parts)}."


RunOne = Callable[[CollectionItem, int], None]
"""Runs the algorithm on one item (its step number given, from 0); raises on failure."""


def run_items(items: Sequence[CollectionItem], run_one: RunOne, callbacks: Callbacks | None = None) -> None:
    """Run every pending item in order; a failure is recorded on its item and the next one runs. A cancel stops
    the loop: the item it interrupted and the rest are marked ``cancelled``. Progress is the share of items done."""
    cb = callbacks or Callbacks()
    todo = [item for item in items if item.status == "pending"]
    for step, item in enumerate(todo):
        if cb.is_cancelled():
            break
        cb.stage(f"Input {step + 1} of {len(todo)}: {Path(item.input).name}")
        start = time.perf_counter()
        try:
            run_one(item, step)
            item.status = "ok"
        except Exception as exc:  # noqa: BLE001 (whatever stops one input, the others still run)
            cancelled = cb.is_cancelled() or isinstance(exc, RunCancelled)
            item.status = "cancelled" if cancelled else "failed"
            item.message = str(exc) or type(exc).__name__
        item.seconds = round(time.perf_counter() - start, 2)
        if item.status == "failed":
            cb.warning(f"{Path(item.input).name} failed: {item.message}")
        cb.progress((step + 1) / len(todo))
        if item.status == "cancelled":
            break
    for item in todo:
        if item.status == "pending":
            item.status, item.message = "cancelled", "Not run: the collection was cancelled."
