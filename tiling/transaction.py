"""All-or-nothing commits: outputs written under temporary names are renamed to their final names together.

:func:`publish` renames a list of temporary files to their targets; when a rename fails, the targets already
replaced get their older files back and the temporary files go, so a failed commit leaves every earlier output
as it was. :func:`commit_all` first finishes every part (each writes what is left and closes its temporary file:
the step that can run out of disk space), then publishes all their moves at once.

Within :func:`run_transaction` (every Processing algorithm runs in one) nothing is published before the run ends:
:func:`commit_all`, :func:`write_together` and :func:`stage` hand their moves to the transaction, which publishes
the moves of the whole run together when it ends normally, or removes every temporary file when it fails — so a
run that fails after its raster was finished (a model or report it cannot write) changes no output at all.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import OutputError
from .removal import remove_path


@dataclass(frozen=True)
class Move:
    """``temp`` becomes ``target``; when ``temp`` does not exist, an older ``target`` is removed (a stale
    sidecar of an older output)."""

    temp: Path
    target: Path


def publish(moves: Sequence[Move]) -> None:
    """Rename every temporary file to its target, all or nothing (see the module docstring)."""
    tag = uuid.uuid4().hex[:8]
    backups: list[tuple[Path, Path]] = []  # (older file set aside, its target)
    placed: list[Path] = []
    try:
        for move in moves:
            target = Path(move.target)
            if target.exists():
                backup = target.with_name(f".{target.name}.{tag}.partial.old")
                os.replace(target, backup)
                backups.append((backup, target))
            if Path(move.temp).exists():
                os.replace(move.temp, target)
                placed.append(target)
    except BaseException as exc:  # a failed rename, or a stop (SIGTERM, Ctrl+C) in the middle: undo
        for target in placed:
            remove_path(target)
        for backup, target in reversed(backups):
            os.replace(backup, target)
        for move in moves:
            remove_path(move.temp)
        if not isinstance(exc, OSError):
            raise
        raise OutputError(f"Cannot move the result to {exc.filename or move.target}: {exc.strerror or exc}. "
                          f"No output was changed; check the folder's permissions and run again.") from exc
    for backup, _ in backups:
        remove_path(backup)


class Committable(Protocol):
    """An output that can commit in two phases (a :class:`~tiling.writer.GeoTiffWriter`, an output head)."""

    def prepare(self) -> list[Move] | None: ...

    def published(self) -> Path: ...

    def commit(self) -> Path: ...


class RunTransaction:
    """The moves of one run, published together at its end (see :func:`run_transaction`)."""

    def __init__(self) -> None:
        self.moves: list[Move] = []
        self.after: list[Callable[[], object]] = []

    def discard(self) -> None:
        for move in self.moves:
            remove_path(move.temp)


_CURRENT: ContextVar[RunTransaction | None] = ContextVar("deepraster_run_transaction", default=None)


@contextlib.contextmanager
def run_transaction() -> Iterator[RunTransaction]:
    """Defer every publish inside the block to its end: all outputs of the run appear together, or none."""
    txn = RunTransaction()
    token = _CURRENT.set(txn)
    try:
        yield txn
    except BaseException:
        txn.discard()
        raise
    finally:
        _CURRENT.reset(token)
    publish(txn.moves)
    for done in txn.after:
        done()


def stage(moves: Sequence[Move], after: Callable[[], object] | None = None) -> None:
    """Publish ``moves`` now, or at the end of the current :func:`run_transaction`; then call ``after``."""
    txn = _CURRENT.get()
    if txn is None:
        publish(moves)
        if after is not None:
            after()
        return
    txn.moves.extend(moves)
    if after is not None:
        txn.after.append(after)


def commit_all(parts: Sequence[Committable]) -> list[Path]:
    """Finish every part, then rename all their files together (at the end of the current run transaction, if
    any); returns the final paths in order. Parts whose ``prepare`` returns None commit on their own."""
    staged = [part.prepare() for part in parts]
    prepared = [part for part, moves in zip(parts, staged, strict=True) if moves is not None]
    stage([move for moves in staged if moves for move in moves],
          lambda: [part.published() for part in prepared])
    return [(Path(moves[0].target) if moves else None) if moves is not None else part.commit()
            for part, moves in zip(parts, staged, strict=True)]


def write_together(contents: Mapping[str | os.PathLike[str], str | bytes]) -> list[Path]:
    """Write small files (reports, descriptions) under temporary names, then rename them together (see
    :func:`publish`); raises :class:`OutputError` and changes nothing when one cannot be written."""
    moves = []
    try:
        for path, content in contents.items():
            target = Path(path)
            temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
            moves.append(Move(temp, target))
            if isinstance(content, bytes):
                temp.write_bytes(content)
            else:
                temp.write_text(content, encoding="utf-8")
    except OSError as exc:
        for move in moves:
            move.temp.unlink(missing_ok=True)
        raise OutputError(f"Cannot write {exc.filename or target}: {exc.strerror or exc}. No output was changed; "
                          f"choose a folder you can write to.") from exc
    stage(moves)
    return [move.target for move in moves]
