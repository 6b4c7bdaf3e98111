"""Running a job as pieces on a Dask cluster and assembling the result.

The caller makes the final outputs' writers; :func:`run_pieces` submits one task per piece, writes the pieces into the
outputs in order as they finish (see :mod:`scale.assemble`) and commits the outputs all together; a failure or a
cancel cancels the remaining tasks, aborts the outputs and removes the pieces. Progress counts finished pieces.
"""

from __future__ import annotations

import math
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from pathlib import Path

from ..tiling.callbacks import Callbacks, check_cancel
from ..tiling.transaction import commit_all
from ..tiling.window import Window
from ..tiling.writer import GeoTiffWriter
from .assemble import InOrder, copy_pieces
from .backend import (
    IMPORTABLE_HINT,
    WORKER_WAIT_S,
    Backend,
    BackendError,
    connect,
    import_distributed,
)
from .worker import PieceResult

POLL_S = 0.25
"""Seconds between two looks at the cancel button while pieces run."""
WATCH_S = 2.0
"""Seconds between two looks at the cluster's workers while pieces run."""

PartPlanner = Callable[[int, int], list[Window]]
"""``(workers, block) → pieces``: output windows in the order the writers take them (``block``: their TIFF block)."""


@dataclass
class PiecesDone:
    """What a distributed run did: pieces, the pieces' counts summed (tiles or pixels done and skipped, seconds in
    the model), wall seconds, the files committed."""

    pieces: int = 0
    done: int = 0
    skipped: int = 0
    model_seconds: float = 0.0
    seconds: float = 0.0
    outputs: list[Path] = field(default_factory=list)
    workers: int = 1


def run_pieces(task: Callable[..., PieceResult], plan: object, writers: Mapping[str, GeoTiffWriter],
               plan_parts: PartPlanner, backend: Backend, callbacks: Callbacks, device: str = "auto") -> PiecesDone:
    """Compute ``task(plan, piece, folder, threads)`` for every piece ``plan_parts`` gives on ``backend``, write the
    pieces into ``writers`` and commit them; nothing is left behind on failure or cancel. ``device``: the run's (a
    local cluster gets one worker per GPU when it may use one)."""
    start = time.perf_counter()
    done = PiecesDone()
    first = next(iter(writers.values())).target
    folder = first.with_name(f".{first.name}.{uuid.uuid4().hex[:8]}.partial-pieces")  # a killed run's: removed by
    # the next run to the same output (tiling.destinations.partial_files)
    committed = False
    try:
        folder.mkdir()
        with connect(backend, callbacks.info, device) as client:
            workers = len(client.scheduler_info().get("workers", {}))
            done.workers = max(1, workers)  # the model share's divisor (workers an adaptive cluster adds later)
            if not workers:
                callbacks.info(f"No Dask worker is connected to {_where(backend)} yet: the pieces wait up to "
                               f"{_worker_wait(backend):g} s for one (an adaptive cluster starts workers for them).")
            parts = plan_parts(max(1, workers), math.lcm(*(writer.block for writer in writers.values())))
            callbacks.info(f"{len(parts)} piece{'s' if len(parts) != 1 else ''} on {workers} Dask "
                           f"worker{'s' if workers != 1 else ''}.")
            compute(client, task, plan, parts, str(folder), backend, done, callbacks,
                    lambda i, result: copy_pieces(writers, parts[i], result.files))
        done.outputs = commit_all(list(writers.values()))
        committed = True
    finally:
        if not committed:
            for writer in writers.values():
                writer.abort()
        shutil.rmtree(folder, ignore_errors=True)
    done.seconds = time.perf_counter() - start
    callbacks.progress(1.0)
    return done


def compute(client, task: Callable[..., PieceResult], plan: object, parts: list[Window], folder: str,
            backend: Backend, done: PiecesDone, callbacks: Callbacks,
            consume: Callable[[int, PieceResult], None]) -> None:
    """Submit ``task(plan, part, folder, threads)`` for every part, then hand each result to ``consume`` in the
    order of ``parts`` as they finish; cancel what is left on any failure or cancel."""
    distributed = import_distributed()
    token = uuid.uuid4().hex[:8]
    futures = [client.submit(task, plan, part, folder, backend.threads, pure=False,
                             key=f"deepraster-piece-{token}-{i}") for i, part in enumerate(parts)]
    index = {future.key: i for i, future in enumerate(futures)}
    ordered = InOrder(consume)
    pending = list(futures)
    watch = WorkerWatch(client, _where(backend), _worker_wait(backend))
    try:
        while pending:
            check_cancel(callbacks)
            finished = [future for future in pending if future.done()]
            if not finished:
                watch.check()
                time.sleep(POLL_S)
                continue
            finished_keys = {future.key for future in finished}
            pending = [future for future in pending if future.key not in finished_keys]
            for future in finished:
                i = index[future.key]
                result = _result(future, parts[i], distributed)
                ordered.add(i, result)
                done.done += result.done
                done.skipped += result.skipped
                done.model_seconds += result.seconds
                done.pieces += 1
                callbacks.progress(done.pieces / len(parts))
                callbacks.stage(f"{done.pieces} of {len(parts)} pieces done")
    except BaseException:
        client.cancel(futures, force=True)
        raise


def _where(backend: Backend) -> str:
    return f"the Dask scheduler at {backend.address}" if backend.kind == "address" else "the local Dask cluster"


def _worker_wait(backend: Backend) -> float:
    """Seconds a run goes on without any worker: a scheduler's setting, :data:`~scale.backend.WORKER_WAIT_S` for a
    local cluster (which starts its workers itself)."""
    return backend.worker_wait_s if backend.kind == "address" else WORKER_WAIT_S


class WorkerWatch:
    """Notices, every :data:`WATCH_S` seconds while pieces are pending, a cluster without any worker (none joined,
    they die as they start, or they all went): after ``limit`` seconds the run stops with a :class:`BackendError`
    instead of waiting for good."""

    def __init__(self, client, where: str, limit: float) -> None:
        self.client, self.where, self.limit = client, where, limit
        self.last_look = self.last_worker = time.monotonic()

    def check(self) -> None:
        now = time.monotonic()
        if now - self.last_look < WATCH_S:
            return
        self.last_look = now
        if self.client.scheduler_info().get("workers"):
            self.last_worker = now
        elif now - self.last_worker > self.limit:
            raise BackendError(f"{self.where[0].upper()}{self.where[1:]} has had no worker for {self.limit:g} s. Start "
                               f"workers ('dask worker <scheduler address>') or check their log (a worker that "
                               f"cannot start, e.g. too little memory, leaves none); {IMPORTABLE_HINT}.")


def _result(future, part, distributed) -> PieceResult:
    """The piece's result; a piece whose workers kept dying, a scheduler or worker that cannot load Deep Raster and
    a lost scheduler are reported as such (other errors pass unchanged)."""
    where = f"The piece at rows {part.row_off}–{part.row_end}, columns {part.col_off}–{part.col_end}"
    try:
        return future.result()
    except distributed.KilledWorker as exc:
        raise BackendError(f"{where} was started on several Dask workers and each of them died ({exc}). Give the "
                           "workers more memory, or fewer threads or a smaller batch size.") from None
    except CancelledError as exc:  # the client's connection to the scheduler went (FutureCancelledError)
        raise BackendError(f"{where} was cancelled by Dask ({exc}): the connection to the scheduler was lost. Check "
                           "that the scheduler still runs, and run again.") from None
    except (RuntimeError, ModuleNotFoundError) as exc:
        if "deserialization of the task graph" not in str(exc) and "No module named 'deepraster'" not in str(exc):
            raise
        raise BackendError(f"{where} could not be run: {str(exc).splitlines()[0]} ({type(exc).__name__}); "
                           f"{IMPORTABLE_HINT}.") from None
