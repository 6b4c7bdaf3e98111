"""Peak memory (and speed) of the tiled engine against raster size, with a tiny model.

The model is one ``torch.nn.Conv2d(4, 3, 3, padding=1)`` (fixed seed) wrapped in :class:`TorchPredictor` with a
softmax, so the engine itself (reading, blending, writing) dominates. It is driven through :class:`TiledRun` +
:class:`StripReader` + :class:`ProbabilityHead` (float32 by default) + :class:`ClassHead` directly, as
``classify_raster`` would do for a 3-class package (an smp package cannot hold such a model).

Inputs are generated 4-band uint16 GeoTIFFs (tiled 256², DEFLATE + horizontal predictor) of N×N pixels, written
strip by strip with GDAL so that generation stays lean: a smooth pattern plus Gaussian noise, so that compression
ratios are realistic. They are cached in ``bench/data/`` (git-ignored).

Each size runs in a FRESH child process. Memory figures, all in MiB:

* ``rss_after_imports``: the child's RSS right after importing torch, GDAL and the engine (the baseline);
* ``peak_vmhwm``: the child's ``VmHWM`` read by itself at the end; ``peak_ru_maxrss``: the same peak seen by the
  parent through ``os.wait4`` (the parent imports neither torch nor GDAL, so the two agree);
* ``engine_increment``: peak − RSS after imports;
* an RSS timeline sampled every ``--sample`` seconds by a thread in the child.

Targets: the peak at the largest size < 2 GB (2048 MiB) and within 20 % of the peak at the smallest size.

Time is profiled in the child by wrapping (not editing) the engine's parts: strip reading (background thread, so it
overlaps the rest), the consumer's wait for strips, ``predict``, blending (``add``, ``release_until``) and each
output head's ``write``/``commit`` (conversion, GDAL compression and writing).

Run: ``.venv/bin/python bench/bench_memory.py [--sizes 5000,20000] [--out ...]``; ``--sizes 1000,2000`` is quick.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common

BLOCK = 256


def data_path(size: int) -> Path:
    """Where the generated N×N raster is cached."""
    return _common.DATA / f"synthetic_4b_uint16_{size}.tif"


# --------------------------------------------------------------------------------------------------- generation
def generate(size: int, path: Path, seed: int = 0) -> None:
    """Write a ``size``² 4-band uint16 tiled DEFLATE GeoTIFF, one block row at a time (runs in a child)."""
    import numpy as np
    from osgeo import gdal, osr

    gdal.UseExceptions()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    options = ["TILED=YES", f"BLOCKXSIZE={BLOCK}", f"BLOCKYSIZE={BLOCK}", "COMPRESS=DEFLATE", "PREDICTOR=2",
               "BIGTIFF=IF_SAFER", "NUM_THREADS=ALL_CPUS"]
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp), size, size, 4, gdal.GDT_UInt16, options)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    ds.SetGeoTransform((500000.0, 10.0, 0.0, 6000000.0, 0.0, -10.0))
    for i, name in enumerate(("B02", "B03", "B04", "B08")):
        ds.GetRasterBand(i + 1).SetDescription(name)
    rng = np.random.default_rng(seed)
    x = np.arange(size, dtype=np.float32)
    sx1, sx2 = np.sin(2 * np.pi * x / 1700.0), 2 * np.pi * x / 610.0
    for y0 in range(0, size, BLOCK):
        rows = min(BLOCK, size - y0)
        y = np.arange(y0, y0 + rows, dtype=np.float32)[:, None]
        smooth = 700.0 * sx1[None, :] * np.cos(2 * np.pi * y / 2300.0) + 300.0 * np.sin(sx2[None, :] + 2 * np.pi
                                                                                         * y / 610.0)
        strip = np.empty((4, rows, size), dtype=np.uint16)
        for b in range(4):
            noise = rng.standard_normal((rows, size), dtype=np.float32) * 25.0
            strip[b] = np.clip(1500.0 + 300.0 * b + (1.0 + 0.3 * b) * smooth + noise, 1, 65535).astype(np.uint16)
        ds.WriteArray(strip, 0, y0)
        ds.FlushCache()
    ds = None
    tmp.replace(path)


# --------------------------------------------------------------------------------------------------- measured child
class _Timer:
    """Accumulates seconds and calls per named part (thread-safe enough: one writer per name)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1

        return timed


class _RssSampler(threading.Thread):
    """Samples the process's RSS every ``interval`` seconds (timeline for the report)."""

    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()
        self._t0 = time.perf_counter()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.samples.append((round(time.perf_counter() - self._t0, 2),
                                 _common.mib(_common.proc_status_kib("VmRSS"))))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def child(size: int, raster: Path, out_dir: Path, tile: int, overlap: int, batch: int, percent: bool,
          sample: float) -> dict[str, Any]:
    """Run the engine once over ``raster`` and report memory and time (runs in the fresh child)."""
    t_import = time.perf_counter()
    _common.ensure_plugin_path()
    import numpy as np  # noqa: F401 (part of the measured import baseline)
    import torch
    from deepraster.tiling.blend import StripBlender
    from deepraster.tiling.engine import TiledRun
    from deepraster.tiling.grid import TileGrid
    from deepraster.tiling.outputs import ClassHead, ClassInfo, ProbabilityHead
    from deepraster.tiling.predictor import TorchPredictor
    from deepraster.tiling.reader import InputTransform, StripReader
    from deepraster.tiling.source import RasterSource
    from osgeo import gdal  # noqa: F401

    import_s = time.perf_counter() - t_import
    rss_imports = _common.proc_status_kib("VmRSS")
    timer = _Timer()

    class TimedStripReader(StripReader):
        """The engine's reader with its (background) strip reads and the consumer's waits timed."""

        def read_strip(self, ds: Any, grid_row: int) -> Any:
            return timer.wrap("read_strip (background thread)", super().read_strip)(ds, grid_row)

        def __iter__(self) -> Any:
            it = super().__iter__()
            while True:
                t0 = time.perf_counter()
                try:
                    strip = next(it)
                except StopIteration:
                    return
                finally:
                    timer.seconds["wait_for_strip (consumer)"] += time.perf_counter() - t0
                    timer.calls["wait_for_strip (consumer)"] += 1
                yield strip

    torch.manual_seed(0)
    model = torch.nn.Conv2d(4, 3, 3, padding=1)
    predictor = TorchPredictor(model, torch.device("cpu"), "softmax")
    source = RasterSource.open(str(raster))
    grid = TileGrid(source.window, tile, overlap)
    reader = TimedStripReader(source, grid, InputTransform(bands=(1, 2, 3, 4), scale=1e-4))
    out_dir.mkdir(parents=True, exist_ok=True)
    names = ("clear", "cloud", "shadow")
    classes = [ClassInfo(0, names[0], (58, 157, 35)), ClassInfo(1, names[1], (240, 240, 240)),
               ClassInfo(2, names[2], (75, 63, 143))]
    prob_head = ProbabilityHead(str(out_dir / "probabilities.tif"), source, source.window, names, percent)
    class_head = ClassHead(str(out_dir / "classes.tif"), source, source.window, classes)
    for label, head in (("probability", prob_head), ("class", class_head)):
        head.write = timer.wrap(f"head_write_{label}", head.write)
        head.commit = timer.wrap(f"head_commit_{label}", head.commit)
    run = TiledRun(grid, reader, timer.wrap("predict", predictor), 3, [prob_head, class_head], batch)
    StripBlender.add = timer.wrap("blend_add", StripBlender.add)  # each panel has its own blender
    StripBlender.release_until = timer.wrap("blend_release", StripBlender.release_until)
    rss_setup = _common.proc_status_kib("VmRSS")

    sampler = _RssSampler(sample)
    sampler.start()
    t0 = time.perf_counter()
    stats = run.run()
    wall = time.perf_counter() - t0
    sampler.stop()
    hwm = _common.proc_status_kib("VmHWM")
    out_bytes = {p.name: p.stat().st_size for p in out_dir.glob("*.tif")}
    accounted = sum(v for k, v in timer.seconds.items() if "background" not in k)
    profile = {k: {"seconds": round(v, 2), "share_of_run": round(v / wall, 4), "calls": timer.calls.get(k, 0)}
               for k, v in sorted(timer.seconds.items())}
    profile["other (loop, cutting, stacking)"] = {"seconds": round(wall - accounted, 2),
                                                  "share_of_run": round((wall - accounted) / wall, 4)}
    step = max(1, len(sampler.samples) // 120)
    return {
        "size": size, "mpx": size * size / 1e6, "tile_size": tile, "overlap": overlap, "batch_size": batch,
        "probabilities": "uint8 percent" if percent else "float32",
        "import_s": round(import_s, 2),
        "rss_after_imports_mib": _common.mib(rss_imports),
        "rss_after_setup_mib": _common.mib(rss_setup),
        "peak_vmhwm_mib": _common.mib(hwm),
        "engine_increment_mib": _common.mib(hwm - rss_imports),
        "run_s": round(wall, 2),
        "mpx_per_s": round(size * size / 1e6 / wall, 3),
        "run_stats": {"panels": stats.panels, "tiles_total": stats.tiles_total,
                      "tiles_predicted": stats.tiles_predicted,
                      "batches": stats.batches, "predict_s": round(stats.predict_seconds, 2),
                      "total_s": round(stats.total_seconds, 2), "efficiency": round(stats.efficiency, 4)},
        "profile": profile,
        "output_bytes": out_bytes,
        "rss_timeline_s_mib": sampler.samples[::step],
        "torch_threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------------------------------- parent
def ensure_data(size: int, timeout_s: float) -> dict[str, Any]:
    """Generate the size² raster in a child unless cached; returns what was done."""
    path = data_path(size)
    if path.exists():
        return {"path": str(path), "cached": True, "bytes": path.stat().st_size}
    res = _common.run_child([str(_common.PYTHON), __file__, "--generate", str(size)], timeout_s)
    if res.returncode != 0 or not path.exists():
        raise RuntimeError(f"generating {path} failed (rc {res.returncode}):\n{res.stderr[-3000:]}")
    return {"path": str(path), "cached": False, "bytes": path.stat().st_size, "generate_s": round(res.wall_s, 1),
            "generate_peak_mib": _common.mib(res.maxrss_kib)}


def measure(size: int, args: argparse.Namespace) -> dict[str, Any]:
    """One fresh child over the size² raster; its own report plus the parent's view (wait4 ru_maxrss, wall)."""
    out_dir = _common.DATA / f"out-memory-{size}"
    cmd = [str(_common.PYTHON), __file__, "--child", str(size), "--tile", str(args.tile), "--overlap",
           str(args.overlap), "--batch", str(args.batch), "--sample", str(args.sample)]
    if args.percent:
        cmd.append("--percent")
    try:
        res = _common.run_child(cmd, args.timeout)
    finally:
        for p in out_dir.glob("*"):
            p.unlink()
        if out_dir.exists():
            out_dir.rmdir()
    report = res.last_json()
    if res.returncode != 0 or report is None:
        return {"size": size, "error": f"child failed (rc {res.returncode})", "stderr_tail": res.stderr[-3000:]}
    report["peak_ru_maxrss_mib"] = _common.mib(res.maxrss_kib)
    report["child_wall_s"] = round(res.wall_s, 2)
    report["load_average_before_after"] = [round(res.load_before, 2), round(res.load_after, 2)]
    return report


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,20000", help="comma-separated raster edges in pixels")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--percent", action="store_true", help="uint8 percent probabilities instead of float32")
    parser.add_argument("--sample", type=float, default=0.5, help="RSS sampling interval in the child (s)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="per child, seconds")
    parser.add_argument("--out", type=Path, default=_common.RESULTS / "memory.json")
    parser.add_argument("--generate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.generate:
        generate(args.generate, data_path(args.generate))
        return None
    if args.child:
        size = args.child
        report = child(size, data_path(size), _common.DATA / f"out-memory-{size}", args.tile, args.overlap,
                       args.batch, args.percent, args.sample)
        print(json.dumps(report))
        return None

    bench_start = time.perf_counter()
    machine = _common.machine_info()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    runs, data = [], {}
    for size in sizes:
        data[size] = ensure_data(size, args.timeout)
        run = measure(size, args)
        runs.append(run)
        if "error" in run:
            print(f"  {size}²: FAILED {run['error']}\n{run['stderr_tail']}", file=sys.stderr, flush=True)
        else:
            top = sorted(((k, v["seconds"]) for k, v in run["profile"].items()), key=lambda kv: -kv[1])[:4]
            print(f"  {size}²: peak {run['peak_vmhwm_mib']:.0f} MiB (wait4 {run['peak_ru_maxrss_mib']:.0f}), after "
                  f"imports {run['rss_after_imports_mib']:.0f} MiB, engine +{run['engine_increment_mib']:.0f} MiB; "
                  f"{run['run_s']:.1f} s, {run['mpx_per_s']:.2f} Mpx/s; top: "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in top), flush=True)

    ok = [r for r in runs if "error" not in r]
    summary: dict[str, Any] = {}
    if len(ok) >= 2:
        small, large = min(ok, key=lambda r: r["size"]), max(ok, key=lambda r: r["size"])
        summary = {
            "small": small["size"], "large": large["size"],
            "peak_ratio_large_over_small": round(large["peak_vmhwm_mib"] / small["peak_vmhwm_mib"], 3),
            "increment_ratio_large_over_small": round(large["engine_increment_mib"] / small["engine_increment_mib"],
                                                      3),
            "large_peak_mib": large["peak_vmhwm_mib"],
            "target_large_peak_below_2048_mib": large["peak_vmhwm_mib"] < 2048,
            "target_within_20_percent": large["peak_vmhwm_mib"] <= 1.2 * small["peak_vmhwm_mib"],
        }
    result = {"benchmark": "memory", "machine": machine, "sizes": sizes,
              "data": {str(k): v for k, v in data.items()}, "runs": runs, "summary": summary,
              "bench_seconds": round(time.perf_counter() - bench_start, 1)}
    _common.write_json(args.out, result)
    parts = [f"{r['size']}²: peak {r['peak_vmhwm_mib']:.0f} MiB (+{r['engine_increment_mib']:.0f} over imports), "
             f"{r['run_s']:.0f} s, {r['mpx_per_s']:.2f} Mpx/s" for r in ok]
    failed = [f"{r['size']}²: FAILED" for r in runs if "error" in r]
    ratio = f" | peak ratio {summary['peak_ratio_large_over_small']:.2f} (target ≤ 1.20, < 2048 MiB)" if summary \
        else ""
    print(f"memory: {' | '.join(parts + failed)}{ratio} | {result['bench_seconds']:.0f} s -> {args.out}")
    return result


if __name__ == "__main__":
    main()
