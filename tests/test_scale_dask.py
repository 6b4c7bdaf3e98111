"""The Dask execution backend (``scale/``) on real clusters: a local cluster started for the run, and a "real
cluster on one machine" (``dask scheduler`` and two ``dask worker`` processes from the command line) reached by
address through ``qgis_process``. Outputs are bit-identical to the in-process run; a worker killed mid-run changes
nothing; bad settings fail fast with a message; nothing is left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from deepraster.models.pixel_classification import ClassifyRequest, classify_raster
from deepraster.models.sources import open_model
from deepraster.scale.backend import Backend
from deepraster.scale.tiled import classify_on_cluster
from deepraster.tiling.callbacks import Callbacks
from deepraster.tiling.errors import RunCancelled
from helpers import REPO
from osgeo import gdal
from test_qgis_process import qgis_process

distributed = pytest.importorskip("distributed", reason="the Dask backend needs dask.distributed (requirements.txt)")
DASK = Path(sys.executable).with_name("dask")


def request(raster: Path, model: Path, out: Path, tag: str) -> ClassifyRequest:
    return ClassifyRequest(raster=str(raster), package=open_model(model), classes_path=str(out / f"{tag}_classes.tif"),
                           probabilities_path=str(out / f"{tag}_prob.tif"))


def pixels(path: Path) -> np.ndarray:
    return gdal.Open(str(path)).ReadAsArray()


def assert_same_outputs(out: Path, a: str, b: str) -> None:
    for kind in ("classes", "prob"):
        np.testing.assert_array_equal(pixels(out / f"{b}_{kind}.tif"), pixels(out / f"{a}_{kind}.tif"))
    for kind in ("classes", "prob"):  # the same georeferencing, metadata, colours and names
        info_a, info_b = (gdal.Info(str(out / f"{tag}_{kind}.tif")) for tag in (a, b))
        assert info_b[info_b.index("Size is"):] == info_a[info_a.index("Size is"):]


def no_leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial" in p.name]


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory, s2_10m) -> Path:
    """The real 10 m scene twice side by side and twice on top (3072 × 1536 px): enough pieces to kill a worker."""
    out = tmp_path_factory.mktemp("mosaic")
    src = gdal.Open(str(s2_10m))
    data = src.ReadAsArray()
    big = np.tile(data, (1, 2, 2))
    ds = gdal.GetDriverByName("GTiff").Create(str(out / "mosaic.tif"), big.shape[2], big.shape[1], big.shape[0],
                                              gdal.GDT_UInt16, ["TILED=YES"])
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.SetProjection(src.GetProjection())
    for i in range(big.shape[0]):
        band = ds.GetRasterBand(i + 1)
        band.WriteArray(big[i])
        band.SetDescription(src.GetRasterBand(i + 1).GetDescription())
    ds = None
    return out / "mosaic.tif"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory):
    """``dask scheduler`` and two ``dask worker`` processes (one thread each) on localhost; yields the address."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": f"{REPO / '.build' / 'plugins'}:{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    logs = tmp_path_factory.mktemp("dask-logs")
    commands = {"scheduler": [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]}
    for i in range(2):
        commands[f"worker{i}"] = [str(DASK), "worker", address, "--nthreads", "1", "--no-dashboard", "--name", f"w{i}"]
    procs = []
    for name, command in commands.items():
        with open(logs / f"{name}.log", "w") as log:  # the child keeps its own handle
            procs.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log))
    client = distributed.Client(address, timeout="30s")
    try:
        client.wait_for_workers(2, timeout=60)
        yield address, client
    finally:
        client.close()
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def test_local_cluster_output_is_bit_identical(s2_10m, model_6b_l1c, tmp_path):
    classify_raster(request(s2_10m, model_6b_l1c, tmp_path, "one"))
    lines: list[str] = []
    stats = classify_on_cluster(request(s2_10m, model_6b_l1c, tmp_path, "dask"), Backend("local", workers=2),
                                Callbacks(info=lines.append), rows_per_piece=256)
    assert_same_outputs(tmp_path, "one", "dask")
    assert any("3 pieces on 2 Dask workers" in line for line in lines), lines
    assert stats.tiles_predicted >= 32 and not no_leftovers(tmp_path)


def test_scheduler_address_through_qgis_process(cli_cluster, s2_30m, model_6b_l1c, tmp_path):
    address, _ = cli_cluster
    classify_raster(request(s2_30m, model_6b_l1c, tmp_path, "one"))
    result = qgis_process("run", "deepraster:classify_pixels", "--", f"INPUT={s2_30m}", f"MODEL={model_6b_l1c}",
                          f"OUTPUT_CLASSES={tmp_path / 'dask_classes.tif'}",
                          f"OUTPUT_PROBABILITIES={tmp_path / 'dask_prob.tif'}", "EXECUTION=2",
                          f"DASK_ADDRESS={address}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Dask scheduler {address}: 2 workers" in result.stdout
    assert_same_outputs(tmp_path, "one", "dask")


def test_a_worker_killed_mid_run_changes_nothing(cli_cluster, mosaic, model_6b_l1c, tmp_path):
    address, client = cli_cluster
    classify_raster(request(mosaic, model_6b_l1c, tmp_path, "one"))
    pids = list(client.run(os.getpid).values())
    progress: list[float] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            classify_on_cluster(request(mosaic, model_6b_l1c, tmp_path, "dask"), Backend("address", address=address),
                                Callbacks(progress=progress.append), rows_per_piece=256)
        except BaseException as exc:  # noqa: BLE001 (reported by the test thread)
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 120
    while not progress and time.time() < deadline:  # the first piece is done: the others are in flight
        time.sleep(0.05)
    os.kill(pids[0], signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and not errors, errors
    assert_same_outputs(tmp_path, "one", "dask")
    assert not no_leftovers(tmp_path)
    client.wait_for_workers(2, timeout=60)  # the nanny started the killed worker again: a new process
    assert pids[0] not in client.run(os.getpid).values()


def test_cancel_leaves_nothing(cli_cluster, mosaic, model_6b_l1c, tmp_path):
    address, _ = cli_cluster
    (tmp_path / "old_classes.tif").write_bytes(b"keep me")
    calls = []
    callbacks = Callbacks(progress=calls.append, is_cancelled=lambda: len(calls) >= 1)
    req = ClassifyRequest(raster=str(mosaic), package=open_model(model_6b_l1c),
                          classes_path=str(tmp_path / "old_classes.tif"))
    with pytest.raises(RunCancelled):
        classify_on_cluster(req, Backend("address", address=address), callbacks, rows_per_piece=256)
    assert (tmp_path / "old_classes.tif").read_bytes() == b"keep me"
    assert not no_leftovers(tmp_path)


def test_features_on_the_cluster_equal_the_in_process_raster(cli_cluster, s2_10m, model_6b_l1c, tmp_path):
    from deepraster.models.feature_extraction import FeatureRequest, extract_features
    from deepraster.scale.tiled import extract_on_cluster

    address, _ = cli_cluster

    def req(name: str) -> FeatureRequest:
        return FeatureRequest(raster=str(s2_10m), output=str(tmp_path / name), package=open_model(model_6b_l1c),
                              stride=8, resume=False)

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker: PyTorch's sums depend on the thread count (rounding, ~1e-6)
    try:
        extract_features(req("one.tif"))
    finally:
        torch.set_num_threads(threads)
    result = extract_on_cluster(req("dask.tif"), Backend("address", address=address))
    np.testing.assert_array_equal(pixels(tmp_path / "dask.tif"), pixels(tmp_path / "one.tif"))
    assert result.shape == (96, 192) and not no_leftovers(tmp_path)
    meta = gdal.Open(str(tmp_path / "dask.tif")).GetMetadata()
    assert meta["DEEPRASTER_OUTPUT_STRIDE"] == "8" and meta == gdal.Open(str(tmp_path / "one.tif")).GetMetadata()


def test_one_local_worker_per_gpu_each_seeing_its_own(monkeypatch):
    """On a machine with GPUs (here: announced through CUDA_VISIBLE_DEVICES, no GPU needed) a local cluster with an
    automatic worker count starts one worker per GPU, each with only its GPU visible; a CPU run does not."""
    from deepraster.scale.backend import connect, visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert visible_gpus() == ["0", "1"]
    lines: list[str] = []
    with connect(Backend("local"), lines.append, device="auto") as client:
        seen = sorted(client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES")).values())
    assert seen == ["0", "1"] and "one per GPU (0, 1)" in lines[0]
    with connect(Backend("local", workers=1), device="cpu") as client:
        assert len(client.scheduler_info()["workers"]) == 1


def test_collection_with_a_broken_raster_on_the_cluster(cli_cluster, s2_30m, model_6b_l1c, tmp_path):
    """Run over a collection, each input's pieces on the cluster (qgis_process): two outputs equal to in-process
    runs, a mosaic, and a report naming the broken third."""
    import json

    address, _ = cli_cluster
    folder = tmp_path / "in"
    folder.mkdir()
    gdal.Translate(str(folder / "west.tif"), str(s2_30m), srcWin=[0, 0, 256, 256])
    gdal.Translate(str(folder / "east.tif"), str(s2_30m), srcWin=[256, 0, 256, 256])
    (folder / "broken.tif").write_bytes(b"II*\x00" + b"not a raster" * 20)
    params = {"MODEL": str(model_6b_l1c), "EXECUTION": 2, "DASK_ADDRESS": address}
    result = qgis_process("run", "deepraster:run_collection", "--", "ALGORITHM=classify_pixels",
                          f"INPUT_FOLDER={folder}", f"OUTPUT_FOLDER={tmp_path / 'out'}",
                          f"PARAMETERS={json.dumps(params)}")
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "2 of 3 inputs done, 1 failed" in log and "broken.tif: Cannot open" in log
    assert log.count(f"Dask scheduler {address}") == 2
    for name in ("west", "east"):
        classify_raster(ClassifyRequest(raster=str(folder / f"{name}.tif"), package=open_model(model_6b_l1c),
                                        classes_path=str(tmp_path / f"{name}_one.tif")))
        np.testing.assert_array_equal(pixels(tmp_path / "out" / f"{name}.tif"), pixels(tmp_path / f"{name}_one.tif"))
    assert gdal.Open(str(tmp_path / "out" / "collection_mosaic.vrt")).RasterXSize == 512


def test_pieces_of_a_killed_run_are_removed_by_the_next_run(qgis_app, s2_30m, model_6b_l1c, tmp_path):
    """A client killed mid-run leaves its hidden folder of pieces; the next run to the same output removes it."""
    import processing

    stale = tmp_path / ".classes.tif.0123abcd.partial-pieces"
    stale.mkdir()
    (stale / "classes_c0_r0.tif").write_bytes(b"half a piece")
    processing.run("deepraster:classify_pixels", {"INPUT": str(s2_30m), "MODEL": str(model_6b_l1c),
                                                  "OUTPUT_CLASSES": str(tmp_path / "classes.tif")})
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("algorithm", ["cluster_pixels", "reduce_dimensions"])
def test_per_pixel_mapping_on_the_cluster_is_identical(qgis_app, cli_cluster, s2_10m, tmp_path, algorithm):
    """Sampling and fitting stay in this process; every pixel is mapped by the workers in bands of rows."""
    import processing

    address, _ = cli_cluster
    params = {"INPUT": str(s2_10m), "BANDS": [1, 2, 3, 7], "SAMPLE_SIZE": 2000, "SEED": 1}
    if algorithm == "cluster_pixels":
        params["N_CLUSTERS"] = 4
    else:
        params["N_COMPONENTS"] = 3
    processing.run(f"deepraster:{algorithm}", {**params, "OUTPUT": str(tmp_path / "one.tif")})
    processing.run(f"deepraster:{algorithm}", {**params, "OUTPUT": str(tmp_path / "dask.tif"), "EXECUTION": 2,
                                               "DASK_ADDRESS": address})
    np.testing.assert_array_equal(pixels(tmp_path / "dask.tif"), pixels(tmp_path / "one.tif"))
    assert not no_leftovers(tmp_path)


@pytest.mark.parametrize("mode", [0, 1])
def test_detect_change_on_the_cluster_is_identical(qgis_app, cli_cluster, tmp_path, mode):
    """Both modes, the second raster on a shifted coarser grid (so the pair's warped VRT must be a file the workers
    can read): the same rasters, table and changed share as in this process, and no hidden folder left."""
    import processing
    from helpers import smooth_field, write_raster

    address, _ = cli_cluster
    gt = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)
    coarse = (gt[0] + 10, 20.0, 0.0, gt[3] - 10, 0.0, -20.0)
    if mode == 0:
        rng = np.random.default_rng(5)
        first = write_raster(tmp_path / "a.tif", rng.integers(1, 5, (300, 400)).astype(np.uint8), nodata=0)
        second = write_raster(tmp_path / "b.tif", rng.integers(1, 5, (120, 180)).astype(np.uint8), nodata=0,
                              geotransform=coarse)
        extra = {"OUTPUT_TABLE": "table.csv"}
    else:
        first = write_raster(tmp_path / "a.tif", smooth_field(4, 300, 400, np.float32, seed=2))
        second = write_raster(tmp_path / "b.tif", smooth_field(4, 120, 180, np.float32, seed=3), geotransform=coarse)
        extra = {"OUTPUT_SCORE": "score.tif"}
    results = {}
    for name, backend in (("one", {}), ("dask", {"EXECUTION": 2, "DASK_ADDRESS": address})):
        folder = tmp_path / name
        folder.mkdir()
        outputs = {key: str(folder / value) for key, value in {"OUTPUT": "change.tif", **extra}.items()}
        results[name] = processing.run("deepraster:detect_change", {"INPUT": str(first), "SECOND": str(second),
                                                                     "MODE": mode, **outputs, **backend})
        assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []
    one, dask = results["one"], results["dask"]
    np.testing.assert_array_equal(pixels(dask["OUTPUT"]), pixels(one["OUTPUT"]))
    assert dask["CHANGED_PERCENT"] == one["CHANGED_PERCENT"] > 0
    if mode == 0:
        assert Path(dask["OUTPUT_TABLE"]).read_text() == Path(one["OUTPUT_TABLE"]).read_text()
    else:
        np.testing.assert_array_equal(pixels(dask["OUTPUT_SCORE"]), pixels(one["OUTPUT_SCORE"]))
        assert dask["THRESHOLD_USED"] == one["THRESHOLD_USED"]


def test_pixel_bands_of_rows_cover_the_region():
    from deepraster.scale.pixels import row_bands
    from deepraster.tiling.window import Window

    parts = row_bands(Window(5, 7, 300, 1000), None)(2, 256)
    assert [(p.row_off, p.height) for p in parts] == [(0, 256), (256, 256), (512, 256), (768, 232)]
    assert all(p.col_off == 0 and p.width == 300 for p in parts)


def test_detect_objects_on_the_cluster_gives_the_same_geopackage(qgis_app, cli_cluster, tmp_path):
    """The detector on the workers (bands of tile rows, column panels), the exact merge here: the same boxes, in
    the same order, as in this process (squares across tile edges and corners)."""
    import processing
    from detection_scene import detection_package
    from test_detect_objects import UTM, assert_exact, read_boxes, scene

    address, _ = cli_cluster
    package = detection_package(tmp_path / "squares")
    raster, truth = scene(tmp_path, 64, 24)
    common = {"INPUT": str(raster), "MODEL": str(package), "CONFIDENCE": 0.0, "TILE_SIZE": 64, "OVERLAP": 24}
    processing.run("deepraster:detect_objects", {**common, "OUTPUT": str(tmp_path / "one.gpkg")})
    processing.run("deepraster:detect_objects", {**common, "OUTPUT": str(tmp_path / "dask.gpkg"), "EXECUTION": 2,
                                                 "DASK_ADDRESS": address})
    assert read_boxes(tmp_path / "dask.gpkg", UTM) == read_boxes(tmp_path / "one.gpkg", UTM)
    assert_exact(read_boxes(tmp_path / "dask.gpkg", UTM), truth)


def test_detection_pieces_follow_the_panels_in_bands_of_tile_rows():
    from deepraster.objects.detection import panels
    from deepraster.scale.objects import detection_parts
    from deepraster.tiling.grid import TileGrid
    from deepraster.tiling.window import Window

    grid = TileGrid(Window(0, 0, 1000, 700), 64, 24)
    parts = detection_parts(grid, 400, workers=2)
    cover = np.zeros(grid.shape, int)
    for p in parts:
        cover[p.slices()] += 1
    assert (cover == 1).all() and len({p.col_off for p in parts}) == len(panels(grid, 400)) > 1


def test_a_local_cluster_leaves_this_process_as_it_was(qgis_app, tmp_path):
    """Dask's nannies write their workers' variables (OMP_NUM_THREADS=1, PYTHONHASHSEED ...) into the environment of
    the process holding the cluster, and the backend points multiprocessing at QGIS's Python: after the run both
    are as before, so later child processes (a training run, qgis_process) do not inherit one thread."""
    import multiprocessing.spawn

    from deepraster.scale.backend import Backend, connect

    environment, executable = dict(os.environ), multiprocessing.spawn.get_executable()
    with connect(Backend("local", workers=1, threads=1)) as client:
        assert client.submit(os.getpid).result() != os.getpid()
        assert os.environ.get("OMP_NUM_THREADS") == "1"  # what the nanny wrote, during the run
    assert dict(os.environ) == environment and multiprocessing.spawn.get_executable() == executable
