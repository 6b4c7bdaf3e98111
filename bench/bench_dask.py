"""The Dask backend against the in-process run: same output, speed-up with workers, memory per worker.

A generated N×N 4-band raster (``bench_memory.generate``, cached in ``bench/data/``) is classified by a small smp
U-Net package (resnet18 encoder cut after two stages, random fixed-seed weights, 256 px tiles, 32 px overlap) on
ONNX Runtime:

* ``in_process``: ``classify_raster`` in a fresh child process (ONNX Runtime on every core);
* ``dask_1``, ``dask_2`` …: ``classify_on_cluster`` on a local cluster of that many single-threaded workers.

Reported: wall seconds, the model's own seconds (summed over workers), CPU seconds of the run's whole process
tree and ``cores_busy`` (CPU ÷ wall: how many cores the run kept busy), speed-up over one worker, the peak RSS (MiB)
of the measured process itself (``own_peak_rss_mib``: the in-process run, or the Dask client) and of each worker
process (sampled every 0.5 s through /proc), and whether every output equals the in-process one bit for bit
(SHA-256 of the pixel values, read by block rows). Timings on a loaded machine are noisy: compare the ratios of one
run. Run: ``.venv/bin/python bench/bench_dask.py [--size 20000] [--workers 1,2] [--no-in-process]``; ``--size 4096``
is quick. ``--no-in-process`` leaves the in-process run out (its identity with the cluster runs was shown before):
the cluster runs are then compared with each other (``identical_to_first``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import _common
from bench_memory import data_path, generate


def package_path() -> Path:
    """A small smp U-Net package (resnet18 encoder cut after its second stage, narrow decoder; 4 bands, 3 classes,
    fixed-seed random weights), made once in ``bench/data/``."""
    folder = _common.DATA / "dask_bench_unet_small"
    if (folder / "model.json").is_file():
        return folder
    import json

    import segmentation_models_pytorch as smp
    import torch
    from safetensors.torch import save_file

    _common.ensure_plugin_path()
    from deepraster.tiling.checksums import sha256_of

    kwargs = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}
    torch.manual_seed(0)
    net = smp.Unet("resnet18", encoder_weights=None, in_channels=4, classes=3, **kwargs)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "weights.safetensors"))
    description = {
        "format": "deepraster-model-package", "format_version": "1.0", "name": "dask-bench-unet-small",
        "license": "CC0-1.0", "task": "pixel_classification",
        "architecture": {"framework": "smp", "arch": "Unet", "encoder": "resnet18", "in_channels": 4,
                         "out_channels": 3, "kwargs": kwargs},
        "weights": {"file": "weights.safetensors", "format": "safetensors",
                    "sha256": sha256_of(folder / "weights.safetensors")},
        "input": {"bands": ["B02", "B03", "B04", "B08"], "value_scale": 1e-4,
                  "normalization": {"type": "mean_std", "mean": [0.2] * 4, "std": [0.1] * 4}},
        "inference": {"tile_size": 256, "overlap": 32, "size_divisor": 8, "activation": "softmax"},
        "classes": [{"value": i, "name": n, "color": c} for i, (n, c) in enumerate(
            [("a", "#ff0000"), ("b", "#00ff00"), ("c", "#0000ff")])],
    }
    (folder / "model.json").write_text(json.dumps(description, indent=1), encoding="utf-8")
    return folder


def pixel_digest(path: Path) -> str:
    """SHA-256 of a raster's pixel values, read one block row at a time."""
    from osgeo import gdal

    ds = gdal.Open(str(path))
    digest = hashlib.sha256()
    for row in range(0, ds.RasterYSize, 256):
        digest.update(ds.ReadAsArray(0, row, ds.RasterXSize, min(256, ds.RasterYSize - row)).tobytes())
    return digest.hexdigest()


class TreeMemory(threading.Thread):
    """Samples the RSS of every descendant process (the Dask workers) and keeps each one's peak, in KiB."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peaks: dict[int, int] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.halt.wait(0.5):
            for child in me.children(recursive=True):
                try:
                    rss = child.memory_info().rss // 1024
                except psutil.Error:
                    continue
                self.peaks[child.pid] = max(self.peaks.get(child.pid, 0), rss)


def child(mode: str, raster: str, out: str, workers: int, threads: int) -> None:
    """One measured run in this (fresh) process; prints a JSON line."""
    import json

    _common.ensure_plugin_path()
    from deepraster.models.pixel_classification import ClassifyRequest, classify_raster
    from deepraster.models.sources import open_model
    from deepraster.scale.backend import Backend
    from deepraster.scale.tiled import classify_on_cluster

    request = ClassifyRequest(raster=raster, package=open_model(package_path()), classes_path=out,
                              runtime="onnxruntime")
    memory = TreeMemory()
    memory.start()
    start = time.perf_counter()
    if mode == "in_process":
        stats = classify_raster(request)
    else:
        stats = classify_on_cluster(request, Backend("local", workers=workers, threads=threads))
    wall = time.perf_counter() - start
    memory.halt.set()
    import resource

    used = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(u.ru_utime + u.ru_stime for u in used)  # this process and its reaped workers, CPU seconds
    workers_peaks = sorted(memory.peaks.values(), reverse=True)[:workers] if mode != "in_process" else []
    print(json.dumps({"wall_s": round(wall, 2), "tiles": stats.tiles_predicted,
                      "model_seconds": round(stats.predict_seconds, 1), "cpu_seconds": round(cpu, 1),
                      "client_cpu_seconds": round(used[0].ru_utime + used[0].ru_stime, 1),
                      "cores_busy": round(cpu / wall, 2),
                      "own_peak_rss_mib": round(_common.mib(_common.proc_status_kib("VmHWM")), 1),
                      "worker_peak_rss_mib": [round(_common.mib(k), 1) for k in workers_peaks]}))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=20000)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--no-in-process", action="store_true", help="only the cluster runs (speed-up, memory)")
    parser.add_argument("--out", type=Path, default=_common.RESULTS / "dask.json")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, raster, out, workers, threads = args.child
        child(mode, raster, out, int(workers), int(threads))
        return {}
    _common.ensure_plugin_path()
    raster = data_path(args.size)
    if not raster.exists():
        generate(args.size, raster)
    from deepraster.models.onnx_export import ensure_onnx
    from deepraster.models.sources import open_model

    ensure_onnx(open_model(package_path()))  # exported once, before any timed run
    work = _common.DATA / "dask_bench_out"
    work.mkdir(parents=True, exist_ok=True)
    counts = [int(n) for n in args.workers.split(",")]
    runs: dict[str, Any] = {}
    modes = [] if args.no_in_process else [("in_process", 1)]
    for mode, workers in [*modes, *[(f"dask_{n}", n) for n in counts]]:
        out = work / f"{mode}.tif"
        result = _common.run_child([sys.executable, __file__, "--child", "in_process" if mode == "in_process"
                                    else "dask", str(raster), str(out), str(workers), "1"])
        measured = result.last_json() or {}
        if result.returncode:
            raise SystemExit(f"{mode} failed:\n{result.stderr[-3000:]}")
        runs[mode] = {**measured, "peak_rss_mib": round(_common.mib(result.maxrss_kib), 1),
                      "sha256": pixel_digest(out), "load_after": result.load_after}
        os.remove(out)
        print(mode, runs[mode], flush=True)
    first = next(iter(runs))
    reference = runs[first]["sha256"]
    one = runs.get("dask_1", {}).get("wall_s")
    for mode, run in runs.items():
        run["identical_to_in_process" if first == "in_process" else "identical_to_first"] = run["sha256"] == reference
        if one and mode.startswith("dask_"):
            run["speedup_over_1_worker"] = round(one / run["wall_s"], 3)
    report = {"machine": _common.machine_info(), "size": args.size, "runs": runs}
    _common.write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
