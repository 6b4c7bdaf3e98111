"""Helpers shared by the benchmarks: paths, memory readings, lean child processes, JSON results.

Peak memory of a benchmarked run is measured in a fresh child process, two ways that must agree:

* the child reads its own ``VmHWM`` (peak resident set) from ``/proc/self/status`` at the end, and
* the parent collects the child with ``os.wait4``, whose ``ru_maxrss`` is that one child's peak.

The parent stays lean (no torch, no GDAL: data preparation also runs in children), because ``ru_maxrss`` of a
child forked from a big parent can start out at the parent's size.

``ru_maxrss`` also covers the interpreter's exit: with this venv's (CUDA build of) torch, a child that only does
``import torch`` reaches VmHWM 510 MiB while running and ru_maxrss 634 MiB after exit (measured here), so
``ru_maxrss`` runs about 125 MiB above the peak of the work itself. Use VmHWM where the child can report it, and
``ru_maxrss`` for side-by-side comparisons where it cannot (both sides then pay the same exit cost).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ONNX Runtime's usage telemetry off in every benchmark process and child (Deep Raster's code turns it off before
# importing onnxruntime; a peer loop left with it on would also pay its database writes at exit)
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
DATA = BENCH / "data"
DEFAULT_PLUGINS = ROOT / ".build" / "plugins"
PLUGINS = Path(os.environ.get("DEEPRASTER_BENCH_PLUGINS", DEFAULT_PLUGINS)).resolve()
"""The folder holding the ``deepraster`` package measured; set DEEPRASTER_BENCH_PLUGINS to measure another copy
(e.g. a patched one) with the same benchmarks: children inherit it."""
PYTHON = ROOT / ".venv" / "bin" / "python"


def ensure_plugin_path() -> None:
    """Make ``import deepraster`` work: ``.build/plugins`` (holding the link ``deepraster`` → repo root, made when
    missing) or DEEPRASTER_BENCH_PLUGINS first on ``sys.path``."""
    link = PLUGINS / "deepraster"
    if not link.exists() and not os.environ.get("DEEPRASTER_BENCH_PLUGINS"):
        PLUGINS.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("..") / "..")
    if str(PLUGINS) in sys.path:
        sys.path.remove(str(PLUGINS))
    sys.path.insert(0, str(PLUGINS))


def child_env() -> dict[str, str]:
    """Environment for child processes: plugin on PYTHONPATH, headless Qt."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PLUGINS), env.get("PYTHONPATH", "")) if p)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    runtime = ROOT / ".build" / "qgis-profile" / "runtime"
    if "XDG_RUNTIME_DIR" not in env:
        runtime.mkdir(parents=True, exist_ok=True)
        runtime.chmod(0o700)
        env["XDG_RUNTIME_DIR"] = str(runtime)
    return env


def proc_status_kib(field: str, pid: int | str = "self") -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``...) in KiB; 0 when unavailable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def mib(kib: float) -> float:
    """KiB → MiB, rounded to 0.1."""
    return round(kib / 1024.0, 1)


@dataclass
class ChildResult:
    """What a child process did: exit status, wall time, peak RSS (``ru_maxrss`` via ``wait4``), output."""

    returncode: int
    wall_s: float
    maxrss_kib: int
    stdout: str
    stderr: str
    load_before: float = 0.0
    load_after: float = 0.0

    def last_json(self) -> dict[str, Any] | None:
        """The last stdout line that parses as a JSON object (children report that way), or None."""
        for line in reversed(self.stdout.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue
        return None


def run_child(cmd: Sequence[str], timeout_s: float | None = None, cwd: Path = ROOT) -> ChildResult:
    """Run ``cmd``, wait with ``os.wait4`` and return its own peak RSS and wall time (stdout/stderr kept)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, env=child_env(), cwd=str(cwd))
        pidfd = os.pidfd_open(proc.pid)  # signals through it never reach another process that reuses the pid
        killer = threading.Timer(timeout_s, _kill, (pidfd,)) if timeout_s is not None else None
        if killer is not None:
            killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # blocking: the wall time is exact (a polling loop rounded it)
        finally:
            if killer is not None:
                killer.cancel()
                killer.join()
            os.close(pidfd)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildResult(proc.returncode, wall, int(usage.ru_maxrss), out.read(), err.read(), load_before,
                           os.getloadavg()[0])


def _kill(pidfd: int) -> None:
    """SIGKILL the process behind ``pidfd`` (nothing when it has ended already)."""
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)


def code_version() -> str:
    """Short SHA-256 over the engine's and the models' sources (the tree changes under us; no commits to name)."""
    digest = hashlib.sha256()
    package = PLUGINS / "deepraster"
    for path in sorted([*package.glob("tiling/*.py"), *package.glob("models/*.py")]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def machine_info() -> dict[str, Any]:
    """Where the figures come from (they are only comparable within one run) and which code they measure."""
    return {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_average_1min_at_start": os.getloadavg()[0],
            "core_sources_sha256": code_version(), "package_measured": str(PLUGINS / "deepraster")}


def load_average() -> float:
    """The 1-minute load average (other work on the machine makes timings noisy: recorded beside them)."""
    return round(os.getloadavg()[0], 2)


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence, rounded to 4 decimals."""
    s = sorted(values)
    n = len(s)
    return round(s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2]), 4)
