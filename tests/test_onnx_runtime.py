"""The ONNX Runtime path of "Classify pixels": export checked against PyTorch, cache, no torch at run time.

Real data: the ukis-csmask 6-band U-Net (a copy, made read-only) and the Sentinel-2 scenes. The export goes into a
temporary user cache (XDG_CACHE_HOME), exported once for the module (about 15 s on 2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from deepraster.models.onnx_export import FOLDER_NAME, MIN_AGREEMENT, cached_onnx, ensure_onnx, user_cache_dir
from deepraster.models.package import load_package
from deepraster.models.pixel_classification import ClassifyRequest, input_transform, resolve_bands
from deepraster.models.runtimes import sample_tile
from deepraster.tiling.errors import DeepRasterError
from deepraster.tiling.onnx_predictor import OnnxPredictor, cpu_streams
from deepraster.tiling.source import RasterSource
from helpers import REPO, make_read_only, make_writable
from osgeo import gdal

ALG = "deepraster:classify_pixels"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Iterator[Path]:
    """A fresh user cache for this module (XDG_CACHE_HOME), restored afterwards."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield user_cache_dir()
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory, model_6b_l1c) -> Iterator[tuple[Path, bool]]:
    """A read-only copy of the 6-band package and whether it really is read-only here."""
    folder = tmp_path_factory.mktemp("pkg") / "ukis-6b"
    shutil.copytree(model_6b_l1c, folder, ignore=shutil.ignore_patterns(FOLDER_NAME))  # no shipped export
    read_only = make_read_only(folder)
    yield folder, read_only
    make_writable(folder)


@pytest.fixture(scope="module")
def exported(cache, package_copy, s2_10m) -> tuple[Path, list[str]]:
    """The package exported once (checked on a random tile and a real 10 m tile); the export's log lines."""
    package = load_package(package_copy[0])
    source = RasterSource.open(str(s2_10m))
    request = ClassifyRequest(raster=str(s2_10m), package=package)
    transform = input_transform(request, resolve_bands(request, source))
    sample = sample_tile(source, source.window, package.tile_size, transform)
    lines: list[str] = []
    path = ensure_onnx(package, sample=sample, info=lines.append)
    return path, lines


def test_export_agrees_with_pytorch(exported):
    """Class agreement ≥ 99.9 % with PyTorch on a random and a real tile, max |Δp| in the log."""
    path, lines = exported
    check = next(line for line in lines if "class agreement" in line)
    agreement = float(check.split("class agreement ")[1].split(" %")[0])
    assert agreement >= 100 * MIN_AGREEMENT, check
    assert "max |Δp|" in check and "131072 px" in check  # two 256 px tiles
    assert path.is_file() and path.stat().st_size > 10_000_000


def test_read_only_package_goes_to_cache(exported, package_copy, cache):
    """Nothing is written into a read-only package folder: the export lies in the user's cache."""
    folder, read_only = package_copy
    if not read_only:
        pytest.skip("cannot make a folder read-only for root here (chattr failed)")
    path, _ = exported
    assert path.parent == cache
    assert not (folder / FOLDER_NAME).exists()
    assert sorted(p.name for p in folder.iterdir()) == ["LICENSE.ukis-csmask", "model.json", "weights.safetensors"]


def test_cache_reused(exported, package_copy):
    """A second request finds the export: same file (not rewritten: same inode), no export logged, marked as used
    (its modification time renewed, for the cache's bound)."""
    path, _ = exported
    before = path.stat()
    os.utime(path, (before.st_atime, before.st_mtime - 100))
    lines: list[str] = []
    assert ensure_onnx(load_package(package_copy[0]), info=lines.append) == path
    after = path.stat()
    assert lines == [] and after.st_ino == before.st_ino and after.st_mtime > before.st_mtime - 100
    assert not list(path.parent.glob("*.part"))  # no temporary file left behind


def test_predictor_contract(exported, s2_10m, package_copy):
    """(N, C, H, W) float32 → (N, K, H, W) probabilities summing to 1; one call per 256 px tile, polled."""
    package = load_package(package_copy[0])
    predictor = OnnxPredictor(exported[0], ["CPUExecutionProvider"], package.activation, threads=2)
    batch = np.random.default_rng(1).standard_normal((2, 6, 256, 256), dtype=np.float32)
    polled: list[float] = []
    predictor.poll = polled.append
    out = predictor(batch)
    assert out.shape == (2, 3, 256, 256) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert polled == [0.5, 1.0]


def test_tiles_of_a_batch_run_at_once_with_the_same_bits(exported, s2_10m, package_copy):
    """Two streams of one thread each (a batch of 4 tiles on 2 threads) give exactly what one call at a time gives;
    progress still comes in tile order on the calling thread, and a cancel raised there stops the batch."""
    package = load_package(package_copy[0])
    one = OnnxPredictor(exported[0], ["CPUExecutionProvider"], package.activation, threads=2)
    two = OnnxPredictor(exported[0], ["CPUExecutionProvider"], package.activation, threads=2, batch_size=4)
    assert (one.streams, two.streams) == (1, 2)
    data = gdal.Open(str(s2_10m)).ReadAsArray(0, 0, 1024, 256)[[0, 1, 2, 6, 8, 9]].astype(np.float32) / 10000
    batch = np.stack([data[:, :, c:c + 256] for c in range(0, 1024, 256)])
    polled: list[float] = []
    two.poll = polled.append
    assert np.array_equal(two(batch), one(batch))
    assert polled == [0.25, 0.5, 0.75, 1.0]

    class Cancelled(Exception):
        pass

    def cancel_at_half(fraction: float) -> None:
        if fraction >= 0.5:
            raise Cancelled

    two.poll = cancel_at_half
    with pytest.raises(Cancelled):
        two(batch)
    two.close()


@pytest.mark.parametrize(("threads", "batch", "expected"), [(1, 4, (1, 1)), (2, 4, (2, 1)), (2, 1, (1, 2)),
                                                            (16, 4, (4, 13)), (16, 8, (4, 13)), (6, 4, (4, 3)),
                                                            (3, 4, (3, 1))])
def test_cpu_threads_split_into_streams_sharing_one_pool(threads, batch, expected):
    """``(streams, intra-op threads)``: the callers plus the shared pool of intra − 1 threads use every thread."""
    streams, intra = cpu_streams(threads, batch)
    assert (streams, intra) == expected and streams + intra - 1 == threads


def test_small_tiles_still_give_every_stream_a_call(exported, package_copy):
    """128 px tiles fit 4 to a call: a batch of 4 on 2 streams is still cut into 2 calls, not 1 on 1 thread."""
    package = load_package(package_copy[0])
    predictor = OnnxPredictor(exported[0], ["CPUExecutionProvider"], package.activation, threads=2, batch_size=4)
    polled: list[float] = []
    predictor.poll = polled.append
    predictor(np.zeros((4, 6, 128, 128), np.float32))
    assert polled == [0.5, 1.0]
    predictor.close()


def real_tiles(s2_10m: Path, count: int = 2) -> np.ndarray:
    """``count`` 256 px tiles of the real 10 m scene in the 6-band package's band order, float32."""
    data = gdal.Open(str(s2_10m)).ReadAsArray(0, 256, 256 * count, 256)[[0, 1, 2, 6, 8, 9]].astype(np.float32) / 10000
    return np.stack([data[:, :, c:c + 256] for c in range(0, 256 * count, 256)])


def test_optimised_graph_saved_once_then_loaded_with_the_same_bits(exported, s2_10m, cache, monkeypatch):
    """The first CPU session saves the graph ONNX Runtime optimised for this CPU into the cache, as a folder whose
    weights file ONNX Runtime maps into memory (not read into new memory); the next session loads that graph (not
    the export) and computes exactly the same; a session without it does too."""
    import deepraster.tiling.onnx_session as onnx_session
    from deepraster.models.cache import ONNX_ENTRY
    from deepraster.models.onnx_optimized import optimized_graph_path

    optimized = optimized_graph_path(exported[0], cache)
    if optimized is None:
        pytest.skip("no CPU signature readable here (not Linux), or the cache is not on a local filesystem")
    shutil.rmtree(optimized, ignore_errors=True)
    assert ONNX_ENTRY.fullmatch(optimized.name) and optimized != exported[0]  # bounded with the exports
    loaded: list[str] = []
    make = onnx_session._session
    monkeypatch.setattr(onnx_session, "_session", lambda path, *a, **k: loaded.append(Path(path).name) or
                        make(path, *a, **k))
    batch = real_tiles(s2_10m)
    first = OnnxPredictor(exported[0], threads=1, optimized=optimized)(batch)
    graph, weights = optimized / onnx_session.GRAPH_NAME, optimized / onnx_session.WEIGHTS_NAME
    assert graph.is_file() and graph.stat().st_size < 1_000_000 and weights.stat().st_size > 10_000_000
    assert not list(cache.glob(".*.part"))
    inode = weights.stat().st_ino
    second = OnnxPredictor(exported[0], threads=1, optimized=lambda: optimized)
    out = second(batch)
    assert str(weights) in Path("/proc/self/maps").read_text(encoding="utf-8")  # mapped, not copied
    plain = OnnxPredictor(exported[0], threads=1)(batch)
    assert loaded == [exported[0].name, graph.name, exported[0].name]
    assert np.array_equal(first, out) and np.array_equal(first, plain)
    assert weights.stat().st_ino == inode  # read, not written again


def test_damaged_optimised_graph_is_made_again(exported, s2_10m, cache):
    """A damaged graph where the optimised graph is kept does not stop the run: the export is loaded and the folder
    replaced by a good one."""
    from deepraster.models.onnx_optimized import optimized_graph_path
    from deepraster.tiling.onnx_session import GRAPH_NAME, WEIGHTS_NAME

    optimized = optimized_graph_path(exported[0], cache)
    if optimized is None:
        pytest.skip("no CPU signature readable here (not Linux), or the cache is not on a local filesystem")
    shutil.rmtree(optimized, ignore_errors=True)
    optimized.mkdir()
    (optimized / GRAPH_NAME).write_bytes(b"not an onnx graph")
    batch = real_tiles(s2_10m, 1)
    out = OnnxPredictor(exported[0], threads=1, optimized=optimized)(batch)
    assert np.array_equal(out, OnnxPredictor(exported[0], threads=1)(batch))
    assert (optimized / WEIGHTS_NAME).stat().st_size > 10_000_000
    assert not list(cache.glob(".*.part"))  # the damaged folder was moved aside and deleted


def test_no_optimised_graph_is_kept_on_a_network_drive(exported, s2_10m, cache, monkeypatch):
    """A cache that is not on a local filesystem gives no optimised graph, not even one already there (made by a
    computer that sees that drive as local): its weights would be mapped into memory, and a mapped file that another
    computer deletes crashes the process. A cache folder that cannot be read does not stop the run either."""
    import deepraster.models.onnx_optimized as onnx_optimized

    kept = onnx_optimized.optimized_graph_path(exported[0], cache)
    if kept is None:
        pytest.skip("no CPU signature readable here (not Linux), or the cache is not on a local filesystem")
    OnnxPredictor(exported[0], threads=1, optimized=kept).session  # noqa: B018 (made, so the folder exists)
    assert kept.is_dir()
    monkeypatch.setattr(onnx_optimized, "on_local_filesystem", lambda path: False)
    assert onnx_optimized.optimized_graph_path(exported[0], cache) is None

    def unreadable() -> Path:
        raise PermissionError(13, "Permission denied", str(cache))

    batch = real_tiles(s2_10m, 1)
    assert np.array_equal(OnnxPredictor(exported[0], threads=1, optimized=unreadable)(batch),
                          OnnxPredictor(exported[0], threads=1)(batch))


def test_optimised_graph_follows_the_cpu_and_the_export(exported, cache, monkeypatch, tmp_path):
    """Another CPU (instruction-set flags) or ONNX Runtime version gets another file, a kernel update that only adds
    mitigation flags does not; no readable CPU flags (not Linux): nothing is saved; an export elsewhere (shipped in
    a package) gets its own file; a new export at the same path drops the graphs of the earlier one."""
    import deepraster.models.onnx_optimized as onnx_optimized
    import onnxruntime

    fake = tmp_path / "cpuinfo"
    monkeypatch.setattr(onnx_optimized, "CPUINFO", fake)

    def graph_for(flags: str, export: Path = exported[0]) -> Path | None:
        fake.write_text(f"processor : 0\nmodel name : Some CPU\nflags : {flags}\n", encoding="utf-8")
        onnx_optimized.cpu_signature.cache_clear()
        return onnx_optimized.optimized_graph_path(export, cache)

    try:
        avx2 = graph_for("fpu sse sse2 avx avx2 fma")
        assert graph_for("fpu sse sse2 avx avx2 fma md_clear ibpb") == avx2  # mitigations only: the same graph
        avx512 = graph_for("fpu sse sse2 avx avx2 fma avx512f avx512bw")
        copy = tmp_path / exported[0].name
        shutil.copyfile(exported[0], copy)
        shipped = graph_for("fpu sse sse2 avx avx2 fma", copy)
        monkeypatch.setattr(onnxruntime, "__version__", "0.0.1")
        other_version = graph_for("fpu sse sse2 avx avx2 fma")
        monkeypatch.undo()
        monkeypatch.setattr(onnx_optimized, "CPUINFO", tmp_path / "missing")
        onnx_optimized.cpu_signature.cache_clear()
        assert onnx_optimized.optimized_graph_path(exported[0], cache) is None
    finally:
        onnx_optimized.cpu_signature.cache_clear()
    graphs = {avx2, avx512, shipped, other_version}
    assert None not in graphs and len(graphs) == 4 and {p.parent for p in graphs} == {cache}
    for graph in (avx2, avx512):
        graph.mkdir(exist_ok=True)
        (graph / "model.onnx").write_bytes(b"an optimised graph")
    earlier_version = cache / f"{exported[0].stem}-{'0' * 24}.onnx"  # kept as a single file before
    earlier_version.write_bytes(b"an optimised graph")
    onnx_optimized.forget_optimized_graphs(exported[0], cache)
    assert not avx2.exists() and not avx512.exists() and not earlier_version.exists() and exported[0].is_file()


def test_an_unloadable_export_is_explained_at_the_first_batch(tmp_path):
    """The session is made in the background; an export ONNX Runtime cannot load stops the first batch with the
    file's name and what to do."""
    broken = tmp_path / "broken-0123456789abcdef01234567.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    predictor = OnnxPredictor(broken, threads=1)
    with pytest.raises(DeepRasterError, match="ONNX Runtime cannot load broken-.*Delete that file"):
        predictor(np.zeros((1, 6, 64, 64), np.float32))


def test_the_session_is_started_before_the_input_checks_and_used_once(exported, package_copy, s2_30m, tmp_path,
                                                                      monkeypatch):
    """classify_raster starts the ONNX Runtime predictor before checking the input and runs on that one (no second
    session); a run that the checks stop leaves no output; runtime torch starts none."""
    import deepraster.models.pixel_classification as pixel_classification
    import deepraster.models.runtimes as runtimes

    events: list[str] = []
    new, plan = runtimes._new_onnx_predictor, pixel_classification.plan_classification
    monkeypatch.setattr(runtimes, "_new_onnx_predictor",
                        lambda path, *a: events.append(f"predictor {Path(path).name}") or new(path, *a))
    monkeypatch.setattr(pixel_classification, "plan_classification",
                        lambda *a, **k: events.append("checks") or plan(*a, **k))
    package = load_package(package_copy[0])
    classes = tmp_path / "c.tif"
    pixel_classification.classify_raster(ClassifyRequest(raster=str(s2_30m), package=package,
                                                         classes_path=str(classes), runtime="onnxruntime"))
    assert events == [f"predictor {exported[0].name}", "checks"] and classes.is_file()
    bad = tmp_path / "bad.tif"
    with pytest.raises(DeepRasterError, match="band"):
        pixel_classification.classify_raster(ClassifyRequest(raster=str(s2_30m), package=package,
                                                             classes_path=str(bad), runtime="onnxruntime",
                                                             bands=[1, 2, 3, 4, 5, 99]))
    assert not [p.name for p in tmp_path.iterdir() if not p.name.startswith("c.tif")]  # nothing of the stopped run
    assert not [t for t in threading.enumerate() if t.name.startswith("deepraster-onnx-session")]  # settled
    assert runtimes.early_onnx_predictor(package, "torch", "cpu", 4) is None


def test_a_failed_check_under_qgis_process_exits_cleanly_and_keeps_the_cache(exported, package_copy, s2_30m, cache,
                                                                             tmp_path):
    """qgis_process ends as soon as a check fails; ONNX Runtime was still making the early session then, crashed
    (exit 139) and left the kept optimised graph moved aside. The run now waits for that session first."""
    nodata = tmp_path / "nodata.tif"
    gdal.Translate(str(nodata), str(s2_30m), srcWin=[0, 0, 64, 64], scaleParams=[[0, 100000, 0, 0]], noData=0)
    args = [str(REPO / "scripts" / "qgis_process"), "run", ALG, "--", f"MODEL={package_copy[0]}"]
    good = subprocess.run([*args, f"INPUT={s2_30m}", f"OUTPUT_CLASSES={tmp_path / 'ok.tif'}"], capture_output=True,
                          text=True, timeout=300)
    assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-2000:]
    kept = sorted(p.name for p in cache.iterdir())
    assert any(name.endswith(".optimized") for name in kept), kept
    for _ in range(3):
        failed = subprocess.run([*args, f"INPUT={nodata}", f"OUTPUT_CLASSES={tmp_path / 'x.tif'}"],
                                capture_output=True, text=True, timeout=300)
        assert failed.returncode == 1, failed.stdout[-2000:] + failed.stderr[-2000:]
        assert "no valid pixel" in failed.stdout + failed.stderr
        assert "onnxruntime" not in failed.stderr
    assert sorted(p.name for p in cache.iterdir()) == kept


def test_onnx_run_imports_no_torch(exported, package_copy, s2_30m, cache, tmp_path):
    """A run on ONNX Runtime with the export cached never imports torch (fresh interpreter), and runs with ONNX
    Runtime's usage telemetry off: no device identifier or event store is written (ONNX Runtime ≥ 1.29 sends them
    to Microsoft otherwise)."""
    script = (
        "import json, os, sys\n"
        "seen = {}\n"
        "def hook(event, args):  # the telemetry switch as onnxruntime is imported\n"
        "    if event == 'import' and args[0] == 'onnxruntime' and 'at_import' not in seen:\n"
        "        seen['at_import'] = os.environ.get('ORT_DISABLE_TELEMETRY')\n"
        "sys.addaudithook(hook)\n"
        "from deepraster.models.package import load_package\n"
        "from deepraster.models.pixel_classification import ClassifyRequest, classify_raster\n"
        "from deepraster.tiling.callbacks import Callbacks\n"
        "lines = []\n"
        f"request = ClassifyRequest(raster={str(s2_30m)!r}, package=load_package({str(package_copy[0])!r}),\n"
        f"                          classes_path={str(tmp_path / 'c.tif')!r}, runtime='onnxruntime')\n"
        "classify_raster(request, Callbacks(info=lines.append))\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'lines': lines,\n"
        "                  'telemetry_off': seen.get('at_import')}))\n"
    )
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = dict(os.environ, XDG_CACHE_HOME=str(cache.parent.parent), PYTHONPATH=os.pathsep.join(sys.path),
               HOME=str(home))
    env.pop("ORT_DISABLE_TELEMETRY", None)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                          cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["torch"] is False
    assert any("ONNX Runtime (CPU" in line for line in result["lines"]), result["lines"]
    assert any(line.startswith("Coverage factor ") for line in result["lines"]), result["lines"]
    assert not any("ONNX export" in line for line in result["lines"])  # found in the cache, not exported again
    assert result["telemetry_off"] == "1"  # already when onnxruntime was imported
    assert not [p for folder in (home, cache.parent.parent) for p in folder.rglob("*") if "Microsoft" in p.parts]
    assert not list(cwd.iterdir())


def test_processing_run_onnx_matches_torch(qgis_app, exported, package_copy, s2_10m, tmp_path):
    """processing.run with RUNTIME=onnxruntime and RUNTIME=torch on 768 × 512 px of the real 10 m scene (12 tiles,
    cloud, shadow and clear): ≥ 99.9 % equal classes."""
    import processing
    from qgis.core import QgsProcessingFeedback

    x0, px, _, y0, _, py = gdal.Open(str(s2_10m)).GetGeoTransform()
    extent = f"{x0 + 384 * px},{x0 + 1152 * px},{y0 + 640 * py},{y0 + 128 * py} [EPSG:32633]"
    classes = {}
    for index, runtime in ((2, "onnxruntime"), (1, "torch")):
        out = processing.run(ALG, {"INPUT": str(s2_10m), "MODEL": str(package_copy[0]), "RUNTIME": index,
                                   "EXTENT": extent,
                                   "OUTPUT_CLASSES": str(tmp_path / f"{runtime}.tif"), "OUTPUT_PROBABILITIES": None},
                             feedback=QgsProcessingFeedback())
        classes[runtime] = gdal.Open(out["OUTPUT_CLASSES"]).ReadAsArray()
    assert classes["onnxruntime"].shape == (512, 768)
    assert len(np.unique(classes["torch"])) >= 2
    agreement = float((classes["onnxruntime"] == classes["torch"]).mean())
    assert agreement >= MIN_AGREEMENT, f"class agreement ONNX vs torch {100 * agreement:.3f} %"
    assert cached_onnx(load_package(package_copy[0])) == exported[0]
