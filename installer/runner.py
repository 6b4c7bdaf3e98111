"""Run pip as a child process: every output line to a callback and a log file, progress estimated from pip's
stages, cancellable within a fraction of a second (the whole process group is ended)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

POLL_S = 0.1
TERMINATE_GRACE_S = 5.0
PIP_ENV = {
    "PYTHONUNBUFFERED": "1",  # lines arrive as pip prints them
    "PYTHONIOENCODING": "utf-8",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_NO_INPUT": "1",
    "PIP_USER": "0",  # a user-wide "user = true" cannot combine with --target
    "PIP_REQUIRE_VIRTUALENV": "0",
}


@dataclass
class PipResult:
    """How a pip run ended: exit code (None when cancelled), whether it was cancelled, its last lines, duration (s)."""

    returncode: int | None
    cancelled: bool
    log_path: Path
    seconds: float
    tail: list[str] = field(default_factory=list)


class PipProgress:
    """Progress 0–1 from pip's output: each "Collecting" line advances towards 0.8 (the expected count of packages
    is a guess: 3 per requirement), "Installing collected packages" is 0.85, "Successfully installed" 1."""

    def __init__(self, requirements: int) -> None:
        self.expected = max(3 * requirements, 3)
        self.collected = 0
        self.value = 0.0

    def update(self, line: str) -> float:
        text = line.strip()
        if text.startswith("Collecting ") or text.startswith("Processing "):
            self.collected += 1
            self.value = max(self.value, 0.8 * min(self.collected / self.expected, 1.0))
        elif text.startswith("Installing collected packages"):
            self.value = max(self.value, 0.85)
        elif text.startswith("Successfully installed"):
            self.value = 1.0
        return self.value


def pip_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: ``base`` (default: this process's) with pip made quiet, unbuffered, non-interactive."""
    env = dict(os.environ if base is None else base)
    env.update(PIP_ENV)
    return env


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    flags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) | getattr(subprocess, "CREATE_NO_WINDOW", 0)
    options: dict = {"start_new_session": True} if os.name != "nt" else {"creationflags": flags}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, encoding="utf-8", errors="replace", bufsize=1, env=env, **options)


def _stop(process: subprocess.Popen) -> None:
    """End pip and whatever it started (a build backend), politely first."""
    if process.poll() is not None:
        return
    try:
        if os.name != "nt":
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.terminate()
        process.wait(TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        if os.name != "nt":
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        process.wait()
    except ProcessLookupError:
        pass


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.rstrip("\r\n"))
    lines.put(None)


def run_pip(command: list[str], log_path: Path, *, on_line: Callable[[str], None] = lambda line: None,
            on_progress: Callable[[float], None] = lambda fraction: None,
            is_cancelled: Callable[[], bool] = lambda: False, env: dict[str, str] | None = None,
            requirements: int = 10, tail_lines: int = 30) -> PipResult:
    """Run ``command`` (a pip command line), writing a log to ``log_path``; cancel is polled every 0.1 s."""
    start = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    progress, tail, cancelled = PipProgress(requirements), [], False
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"Deep Raster installer, {datetime.now().isoformat(timespec='seconds')}\n"
                  f"command: {subprocess.list2cmdline(command)}\n\n")
        log.flush()
        process = _start(command, pip_environment(env))
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
        while True:
            if is_cancelled():
                cancelled = True
                _stop(process)
                break
            try:
                line = lines.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if line is None:
                break
            log.write(line + "\n")
            log.flush()
            tail = (tail + [line])[-tail_lines:]
            on_line(line)
            on_progress(progress.update(line))
        returncode = None if cancelled else process.wait()
        seconds = time.monotonic() - start
        log.write(f"\n{'cancelled' if cancelled else f'exit code {returncode}'} after {seconds:.1f} s\n")
    return PipResult(returncode, cancelled, log_path, seconds, tail)
