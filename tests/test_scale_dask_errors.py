"""The Dask backend's failures: every one stops the run within seconds with a message that says what to change, and
leaves nothing. Unreachable, malformed or non-Dask addresses, Dask missing, a memory limit that is no size or far too
small, a scheduler without workers, a scheduler that cannot import Deep Raster (the documented cluster set-up gave a
raw traceback), and a collection that meets a cluster problem once instead of once per input."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from deepraster.scale.backend import Backend, BackendError, import_distributed
from deepraster.scale.tiled import classify_on_cluster
from deepraster.tiling.callbacks import Callbacks
from helpers import REPO
from test_scale_dask import DASK, free_port, request

distributed = pytest.importorskip("distributed", reason="the Dask backend needs dask.distributed (requirements.txt)")


def test_unreachable_scheduler_fails_fast_and_names_it(s2_30m, model_6b_l1c, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.perf_counter()
    with pytest.raises(BackendError, match=f"Cannot reach a Dask scheduler at {address}"):
        classify_on_cluster(request(s2_30m, model_6b_l1c, tmp_path, "x"), Backend("address", address=address,
                                                                                   connect_timeout_s=2))
    assert time.perf_counter() - start < 15
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("address", ["", "localhost", "http://example.org"])
def test_malformed_address_is_refused(address):
    with pytest.raises(BackendError, match="tcp://host:8786"):
        Backend("address", address=address)


def test_missing_dask_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(BackendError, match="pip install 'dask==.*distributed=="):
        import_distributed()


@pytest.mark.parametrize(("memory", "message"), [("abc", "'abc' is not a size"),
                                                 ("4096", "'4096' is 4096 bytes, too little")])
def test_memory_limit_that_is_no_size_or_far_too_small_is_refused(memory, message):
    """A limit no worker can start with ("4096", meant as MB) made the run wait for a worker for good."""
    with pytest.raises(BackendError, match=f"{message}.*give it as 4GB"):
        Backend("local", memory_limit=memory)
    Backend("local", memory_limit="1.5GiB")
    Backend("local", memory_limit="auto")


def test_a_server_that_is_no_dask_scheduler_fails_in_seconds(s2_30m, model_6b_l1c, tmp_path):
    """A port that accepts and never answers (a web server, the dashboard) hung the run for good."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    start = time.perf_counter()
    try:
        with pytest.raises(BackendError, match=f"Cannot reach a Dask scheduler at {address}.*8786"):
            classify_on_cluster(request(s2_30m, model_6b_l1c, tmp_path, "x"),
                                Backend("address", address=address, connect_timeout_s=1))
    finally:
        server.close()
        for connection in accepted:
            connection.close()
    assert time.perf_counter() - start < 15
    assert not list(tmp_path.iterdir())


def start_scheduler(env: dict, folder: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    proc = subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                            env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"tcp://127.0.0.1:{port}"
    distributed.Client(address, timeout="30s").close()  # up
    return address, proc


def test_a_scheduler_without_workers_or_without_deep_raster_is_explained(s2_30m, model_6b_l1c, tmp_path):
    """A scheduler with no worker (the run waited for good; now it goes on for worker_wait_s, the pieces pending so
    that an adaptive cluster can start workers), and one started as the docs had it, without Deep Raster on its
    PYTHONPATH (a raw "Error during deserialization" traceback)."""
    with_plugin = {**os.environ, "PYTHONPATH": str(REPO / ".build" / "plugins"), "OMP_NUM_THREADS": "1"}
    bare = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    procs = []
    try:
        address, proc = start_scheduler(with_plugin, tmp_path)
        procs.append(proc)
        lines: list[str] = []
        with pytest.raises(BackendError, match="The Dask scheduler at .* has had no worker for 3 s. Start workers"):
            classify_on_cluster(request(s2_30m, model_6b_l1c, tmp_path, "a"),
                                Backend("address", address=address, worker_wait_s=3), Callbacks(info=lines.append))
        assert any("wait up to 3 s for one (an adaptive cluster starts workers" in line for line in lines)
        address, proc = start_scheduler(bare, tmp_path)
        procs.append(proc)
        with pytest.raises(BackendError, match="could not be run: .*must be able to import Deep Raster.*PYTHONPATH"):
            classify_on_cluster(request(s2_30m, model_6b_l1c, tmp_path, "b"), Backend("address", address=address))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tif" or ".partial" in p.name]


def test_a_collection_meets_a_cluster_problem_once(qgis_app, s2_30m, model_6b_l1c, tmp_path):
    """Every input failed on its own after 5 s each, and the run "succeeded" with an empty folder and a summary."""
    import json

    import processing
    from qgis.core import QgsProcessingException

    address = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    start = time.perf_counter()
    with pytest.raises(QgsProcessingException, match=f"Cannot reach a Dask scheduler at {address}"):
        processing.run("deepraster:run_collection", {
            "ALGORITHM": 0, "INPUT_LAYERS": [str(s2_30m)] * 3, "OUTPUT_FOLDER": str(out),
            "PARAMETERS": json.dumps({"MODEL": str(model_6b_l1c), "EXECUTION": 2, "DASK_ADDRESS": address})})
    assert time.perf_counter() - start < 20 and not out.exists()


def test_a_worker_that_cannot_see_the_output_folder_says_so(tmp_path):
    """A worker without the shared filesystem was told the folder "does not exist. Choose an existing folder"."""
    from deepraster.scale.worker import piece_files
    from deepraster.tiling.window import Window

    with pytest.raises(BackendError, match=r"cannot see the folder .*missing.*shared filesystem"):
        piece_files(["classes"], Window(0, 0, 8, 8), str(tmp_path / "missing"))
    files = piece_files(["classes"], Window(8, 0, 8, 8), str(tmp_path))
    assert files == {"classes": str(tmp_path / "classes_c8_r0.tif")}
