"""Where a run computes: this process, a local Dask cluster started for the run, or a running Dask scheduler.

:func:`connect` opens a ``dask.distributed`` client for a :class:`Backend` and closes it (and the local cluster)
afterwards. Workers of a local cluster are started with QGIS's own Python (inside QGIS ``sys.executable`` is the QGIS
program), one piece at a time each, with the model's CPU threads capped at ``threads`` so that workers do not
compete for cores.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.spawn
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..tiling.errors import DeepRasterError

BACKENDS = ("process", "local", "address")
"""``process``: this process (no Dask); ``local``: a Dask cluster on this machine started for the run;
``address``: a running Dask scheduler (``tcp://host:8786``)."""

INSTALL_HINT = ("install them with Deep Raster's installer (Plugins ▸ Deep Raster ▸ Install deep-learning "
                "packages…) or with QGIS's Python: python3 -m pip install 'dask==2026.8.0' 'distributed==2026.8.0'")
MIN_WORKER_MEMORY = 100 * 10**6
"""Bytes below which a local worker's memory limit is refused (the model and one piece's tiles need more)."""
WORKER_WAIT_S = 30.0
"""Seconds a run on a local cluster goes on without any worker (workers that die as they start) before it stops."""
IMPORTABLE_HINT = ("the Dask scheduler and every worker must be able to import Deep Raster: start them with the "
                   "folder holding the plugin on PYTHONPATH (e.g. PYTHONPATH=~/.local/share/QGIS/QGIS3/profiles/"
                   "default/python/plugins dask scheduler), with the same Python packages as QGIS")

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class BackendError(DeepRasterError):
    """The execution backend cannot be used (Dask missing, scheduler unreachable, bad settings)."""


@dataclass(frozen=True)
class Backend:
    """An execution backend. ``workers``: workers of a local cluster (0: one per ``threads`` cores); ``threads``:
    CPU threads of the model in each worker (each worker computes one piece at a time); ``memory_limit``: per local
    worker, Dask's notation (``"4GB"``; ``"auto"``: the machine's memory shared out); ``address``: the scheduler
    of kind ``address``; ``connect_timeout_s``: how long to try reaching it (seconds); ``worker_wait_s``: how long
    a run on it goes on without any worker (seconds: an adaptive or job-queue cluster starts workers for the pending
    pieces, which can take minutes). A piece whose worker dies is started again on another worker (up to Dask's
    ``distributed.scheduler.allowed-failures``, 3)."""

    kind: str = "process"
    workers: int = 0
    threads: int = 1
    memory_limit: str = "auto"
    address: str = ""
    connect_timeout_s: float = 5.0
    worker_wait_s: float = 600.0

    def __post_init__(self) -> None:
        if self.kind not in BACKENDS:
            raise BackendError(f"Unknown execution backend {self.kind!r}: choose one of {', '.join(BACKENDS)}.")
        if self.workers < 0 or self.threads < 1:
            raise BackendError(f"Dask workers must be ≥ 0 (0: automatic) and threads per worker ≥ 1; got "
                               f"{self.workers} workers, {self.threads} threads.")
        if self.kind == "address" and not re.fullmatch(r"(tcp|tls|inproc|ucx)://\S+|[\w.\-\[\]:]+:\d+", self.address):
            raise BackendError(f"Dask scheduler address {self.address!r} is not an address: give it as "
                               "tcp://host:8786 (what 'dask scheduler' prints).")
        if self.kind == "local":
            _check_memory_limit(self.memory_limit)

    @property
    def distributed(self) -> bool:
        """Whether the run goes to a Dask cluster."""
        return self.kind != "process"

    def worker_count(self) -> int:
        """Workers of a local cluster: the setting, or one per ``threads`` cores (at least one)."""
        return self.workers or max(1, (os.cpu_count() or 1) // self.threads)


def _check_memory_limit(text: str) -> None:
    """Refuse a local worker memory limit that is not a size (``abc``) or is too small to run (``4096`` bytes, meant
    as MB): with it no worker survives and the run would wait for one."""
    if text.strip().lower() in ("auto", "0", ""):
        return
    try:
        from dask.utils import parse_bytes
    except ImportError:
        return  # said by connect(): dask is missing
    try:
        size = parse_bytes(text)
    except (ValueError, TypeError):
        raise BackendError(f"The Dask memory limit per worker {text!r} is not a size: give it as 4GB, 1500MB or "
                           "auto.") from None
    if 0 < size < MIN_WORKER_MEMORY:
        raise BackendError(f"The Dask memory limit per worker {text!r} is {size} bytes, too little for a worker (at "
                           f"least {MIN_WORKER_MEMORY // 10**6} MB): give it as 4GB, 1500MB or auto.")


def import_distributed() -> Any:
    """The ``distributed`` module, or a :class:`BackendError` saying what to install."""
    try:
        import distributed
    except ImportError as exc:
        raise BackendError(f"The Dask backend needs the dask and distributed packages, which are not installed "
                           f"({exc}): {INSTALL_HINT}; or choose 'this process'.") from exc
    return distributed


@functools.lru_cache(maxsize=1)
def worker_python() -> str:
    """The Python to start local workers with: the executable of this very Python (inside QGIS ``sys.executable``
    may be the QGIS program, or another Python of the same version found on PATH)."""
    from ..installer.interpreter import this_python

    try:
        return str(this_python())
    except LookupError as exc:
        raise BackendError(f"Cannot start local Dask workers: {exc} Use a Dask scheduler address instead.") from exc


def visible_gpus() -> list[str]:
    """The CUDA devices of this computer as ``CUDA_VISIBLE_DEVICES`` entries: that variable's list when it is set,
    else one per ``nvidia-smi -L`` line (no torch import); empty without a GPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        lines = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(line for line in lines if line.startswith("GPU "))]


@contextmanager
def connect(backend: Backend, info=lambda message: None, device: str = "auto") -> Iterator[Any]:
    """A ``distributed.Client`` for ``backend`` (kind ``local`` or ``address``), closed on exit. A local cluster
    with an automatic worker count for a run whose ``device`` may be a GPU gets one worker per visible GPU, each
    seeing only its own (``CUDA_VISIBLE_DEVICES``)."""
    distributed = import_distributed()
    if backend.kind == "address":
        client = _client_within(distributed, backend)
        try:
            workers = len(client.scheduler_info().get("workers", {}))
            info(f"Dask scheduler {backend.address}: {workers} worker{'s' if workers != 1 else ''}.")
            yield client
        finally:
            client.close()
        return
    gpus = visible_gpus() if backend.workers == 0 and device != "cpu" else []
    with process_state_kept():
        multiprocessing.set_executable(worker_python())
        with local_cluster(distributed, backend, gpus) as cluster, \
                distributed.Client(cluster, set_as_default=False) as client:
            count = len(gpus) or backend.worker_count()
            where = f"one per GPU ({', '.join(gpus)})" if gpus else f"{backend.threads} thread" \
                f"{'s' if backend.threads != 1 else ''} each"
            info(f"Local Dask cluster: {count} worker{'s' if count != 1 else ''} ({worker_python()}), {where}, "
                 f"memory limit {backend.memory_limit}.")
            yield client


def _client_within(distributed, backend: Backend) -> Any:
    """A client of the scheduler at ``backend.address``, or a :class:`BackendError` naming it within about
    ``connect_timeout_s`` + 5 s: Dask's own timeout does not bound the handshake with a server that is not a Dask
    scheduler (a web server, the 8787 dashboard), which could hang the run for good or fail as "out of memory"."""
    outcome: dict[str, Any] = {}
    lock = threading.Lock()  # the client goes to the caller, or is closed by the thread: never both, never neither

    def make() -> None:
        try:
            client = distributed.Client(backend.address, timeout=f"{backend.connect_timeout_s}s",
                                        set_as_default=False)
        except BaseException as exc:  # noqa: BLE001 (whatever it is, the address is the problem)
            outcome["error"] = exc
            return
        with lock:
            if "abandoned" not in outcome:
                outcome["client"] = client
                return
        client.close()

    thread = threading.Thread(target=make, name="deepraster-dask-connect", daemon=True)
    thread.start()
    thread.join(backend.connect_timeout_s + 5.0)
    with lock:
        if "client" in outcome:
            return outcome["client"]
        outcome["abandoned"] = True
    error = outcome.get("error")
    why = f"{type(error).__name__}: {error}" if error is not None else "no answer"
    raise BackendError(f"Cannot reach a Dask scheduler at {backend.address} within {backend.connect_timeout_s:g} s "
                       f"({why}). Check the address (a scheduler listens on 8786 by default, its dashboard on 8787) "
                       "and that 'dask scheduler' runs there and is reachable from this computer.")


def check_backend(backend: Backend) -> None:
    """Check once that ``backend`` can be used (Dask installed; the scheduler of an address reachable), so that a
    run over many rasters stops at once instead of failing on each; nothing for this process."""
    if not backend.distributed:
        return
    distributed = import_distributed()
    if backend.kind == "address":
        _client_within(distributed, backend).close()


@contextmanager
def process_state_kept() -> Iterator[None]:
    """Inside the block this process's environment and multiprocessing's executable may change; after it they are
    as before. A local cluster's nannies live in this process and write their workers' variables into its
    environment before each spawn (``OMP_NUM_THREADS=1``, ``PYTHONHASHSEED`` ...): left there, every later child
    process of QGIS (or of the tests) would inherit them, e.g. PyTorch would train with one thread."""
    environment = dict(os.environ)
    executable = multiprocessing.spawn.get_executable()
    try:
        yield
    finally:
        for name in set(os.environ) - set(environment):
            del os.environ[name]
        for name, value in environment.items():
            if os.environ.get(name) != value:
                os.environ[name] = value
        multiprocessing.set_executable(executable)


def local_cluster(distributed, backend: Backend, gpus: list[str]) -> Any:
    """A local cluster of single-task workers: ``backend.worker_count()`` of them, or one per entry of ``gpus``
    with ``CUDA_VISIBLE_DEVICES`` set to it."""
    env = {name: str(backend.threads) for name in _THREAD_VARIABLES}
    if not gpus:
        return distributed.LocalCluster(n_workers=backend.worker_count(), threads_per_worker=1, processes=True,
                                        memory_limit=backend.memory_limit, dashboard_address=None, env=env,
                                        silence_logs=40)
    workers = {f"gpu{gpu}": {"cls": distributed.Nanny, "options": {
        "nthreads": 1, "memory_limit": backend.memory_limit, "env": {**env, "CUDA_VISIBLE_DEVICES": gpu}}}
        for gpu in gpus}
    return distributed.SpecCluster(workers=workers, silence_logs=40, scheduler={
        "cls": distributed.Scheduler, "options": {"dashboard_address": None}})
