"""Issue 12, items 6 and 14: a run stopped by SIGTERM (``kill``) unwinds like a cancel — nothing left beside the
outputs, an older output unchanged; the hidden partial files a SIGKILLed run leaves are removed by the next run to
the same path. ``qgis_process`` runs the algorithm in its main thread, where the SIGTERM handler is installed."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time
from pathlib import Path

from helpers import REPO

QGIS_PROCESS = REPO / "scripts" / "qgis_process"


def start(raster: Path, model: Path, out: Path, **extra) -> subprocess.Popen:
    args = [f"INPUT={raster}", f"MODEL={model}", f"OUTPUT_CLASSES={out}", "BATCH_SIZE=1", "TILE_SIZE=256",
            "OVERLAP=128", *(f"{k}={v}" for k, v in extra.items())]
    return subprocess.Popen([str(QGIS_PROCESS), "run", "deepraster:classify_pixels", "--", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_partial(proc: subprocess.Popen, folder: Path, timeout: float = 120.0) -> list[Path]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = list(folder.glob(".*.partial*"))
        if found:
            return found
        assert proc.poll() is None, f"the run ended before writing: {proc.communicate()[0]}"
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no partial file appeared")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sigterm_leaves_nothing_and_keeps_old_output(s2_10m, model_6b_l1c, tmp_path):
    out = tmp_path / "c.tif"
    out.write_bytes(b"an older result that must survive")
    before = digest(out)
    proc = start(s2_10m, model_6b_l1c, out)
    wait_for_partial(proc, tmp_path)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, log
    assert "SIGTERM" in log, log
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tif"], log
    assert digest(out) == before


def test_partials_of_a_killed_run_are_removed_by_the_next_run(s2_10m, s2_30m, model_6b_l1c, tmp_path):
    out = tmp_path / "c.tif"
    proc = start(s2_10m, model_6b_l1c, out)
    partials = wait_for_partial(proc, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert all(p.exists() for p in partials)  # what issue 12 found: hidden files left behind
    proc = start(s2_30m, model_6b_l1c, out)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert out.exists()


def test_handler_only_in_the_main_thread_and_restored():
    import os
    import threading

    import pytest
    from deepraster.tiling.errors import RunCancelled
    from deepraster.tiling.interrupt import terminate_as_cancel

    before = signal.getsignal(signal.SIGTERM)
    cancelled = []
    with pytest.raises(RunCancelled, match="SIGTERM"), terminate_as_cancel(lambda: cancelled.append(True)) as on:
        assert on
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs at the next bytecode
    assert cancelled == [True] and signal.getsignal(signal.SIGTERM) is before
    seen = []

    def worker():
        with terminate_as_cancel() as on:
            seen.append((on, signal.getsignal(signal.SIGTERM) is before))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [(False, True)]
