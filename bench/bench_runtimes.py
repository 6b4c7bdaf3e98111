"""Runtimes side by side: a bare ONNX Runtime tiled loop (the reference peer) against Deep Raster on PyTorch and
on ONNX Runtime, the same job on the real Sentinel-2 10 m scene (and optionally a 6144 × 3072 mosaic of it).

(a) ``peer``: what simple QGIS plugins do: the whole raster read into memory, normalised, padded, cut into fixed
    tiles with a % overlap, each tile through ``InferenceSession.run`` (default session options), probabilities
    summed and averaged in whole-raster arrays, argmax, written with GDAL. Same ONNX graph as (c).
(b) ``torch``: ``classify_raster(runtime="torch")`` (streamed strips, Hann blending, GeoTIFF writer).
(c) ``onnx``: ``classify_raster(runtime="onnxruntime")``, the export cached beforehand (its cost reported apart).

Every run is a fresh child process (``_common.run_child``): wall time from spawn to exit (interpreter start and
imports included), time to the first tile (spawn → first model output), peak RSS (VmHWM read by the child and
``ru_maxrss`` from ``wait4``). Paths alternate within each repeat; medians are reported. Class agreement between
the three paths is computed on the first repeat's class rasters. Configurations: equal tiling (256 px tiles, the
peer's 15 % overlap = 38 px, and our default 52 px; no edge margin for ours) and our package defaults.

Run: ``.venv/bin/python bench/bench_runtimes.py [--repeats 3] [--mosaic] [--out bench/results/runtimes.json]``.
JSON goes to stdout and to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

SCENE = _common.ROOT / ".data/s2/s2_l1c_10m.tif"
PACKAGE = _common.ROOT / ".data/models/ukis-csmask-6b-l1c"
MOSAIC = _common.DATA / "s2_l1c_10m_mosaic_6144x3072.tif"
TILE = 256
PEER_OVERLAP_PERCENT = 15


# --------------------------------------------------------------------------------------------------- children
def child_peer(raster: Path, tile: int, overlap: int, classes_out: Path, t0: float) -> dict[str, Any]:
    """The bare ONNX Runtime loop of a simple plugin; the export of PACKAGE is its graph."""
    import numpy as np
    import onnxruntime as ort
    from deepraster.models.inputs import package_bands
    from deepraster.models.onnx_export import cached_onnx
    from deepraster.models.package import load_package
    from deepraster.tiling.source import RasterSource
    from osgeo import gdal

    package = load_package(PACKAGE, verify_checksum=False)  # a simple plugin does not check the weights
    session = ort.InferenceSession(str(cached_onnx(package)), providers=["CPUExecutionProvider"])
    ds = gdal.Open(str(raster))
    bands = package_bands(package, RasterSource.open(str(raster)), None)  # the same band matching as ours
    img = np.stack([ds.GetRasterBand(b).ReadAsArray() for b in bands])
    img = img.astype(np.float32) * package.value_scale + package.value_offset
    shift, divisor = package.normalization.shift_and_divisor(len(package.bands))
    img = (img - np.asarray(shift, np.float32)[:, None, None]) / np.asarray(divisor, np.float32)[:, None, None]
    rows, cols = img.shape[1:]
    step = tile - overlap
    pad = [tile - n if n <= tile else -(n - tile) % step for n in (rows, cols)]  # whole tiles cover the raster
    img = np.pad(img, ((0, 0), (0, pad[0]), (0, pad[1])), mode="reflect")
    total = np.zeros((package.architecture.out_channels, *img.shape[1:]), np.float32)
    count = np.zeros(img.shape[1:], np.float32)
    first = None
    tiles = 0
    for r in range(0, img.shape[1] - tile + 1, step):
        for c in range(0, img.shape[2] - tile + 1, step):
            logits = session.run(None, {session.get_inputs()[0].name: img[None, :, r:r + tile, c:c + tile]})[0][0]
            e = np.exp(logits - logits.max(axis=0, keepdims=True))
            total[:, r:r + tile, c:c + tile] += e / e.sum(axis=0, keepdims=True)
            count[r:r + tile, c:c + tile] += 1
            tiles += 1
            first = first or time.time() - t0
    classes = (total / count).argmax(axis=0)[:rows, :cols].astype(np.uint8)
    out = gdal.GetDriverByName("GTiff").Create(str(classes_out.with_suffix(".tif")), cols, rows, 1, gdal.GDT_Byte,
                                               ["COMPRESS=DEFLATE", "TILED=YES"])
    out.SetGeoTransform(ds.GetGeoTransform())
    out.SetProjection(ds.GetProjection())
    out.WriteArray(classes)
    out = None
    np.save(classes_out, classes)
    return {"first_tile_s": first, "tiles": tiles, "coverage": tiles * tile * tile / (rows * cols)}


def child_ours(runtime: str, raster: Path, tile: int, overlap: int | None, margin: int | None, classes_out: Path,
               t0: float) -> dict[str, Any]:
    """Deep Raster's pipeline on ``runtime`` writing a class raster."""
    from deepraster.models.package import load_package
    from deepraster.models.pixel_classification import ClassifyRequest, classify_raster
    from deepraster.tiling.callbacks import Callbacks
    from osgeo import gdal

    first: list[float] = []
    lines: list[str] = []
    callbacks = Callbacks(progress=lambda f: f > 0 and not first and first.append(time.time() - t0),
                          info=lines.append)
    request = ClassifyRequest(raster=str(raster), package=load_package(PACKAGE), classes_path=str(classes_out) + ".tif",
                              tile_size=tile, overlap=overlap, edge_margin=margin, runtime=runtime)
    stats = classify_raster(request, callbacks)
    import numpy as np

    np.save(classes_out, gdal.Open(str(classes_out) + ".tif").ReadAsArray())
    coverage = next((float(line.split()[2]) for line in lines if line.startswith("Coverage factor")), None)
    return {"first_tile_s": first[0] if first else None, "tiles": stats.tiles_predicted, "coverage": coverage,
            "runtime_line": next((line for line in lines if line.startswith("Model ")), ""),
            "torch_imported": "torch" in sys.modules}


def child_main(args: argparse.Namespace) -> None:
    _common.ensure_plugin_path()
    if args.child == "export":
        from deepraster.models.onnx_export import ensure_onnx
        from deepraster.models.package import load_package

        start = time.perf_counter()
        path = ensure_onnx(load_package(PACKAGE), info=lambda m: print(m, file=sys.stderr))
        result: dict[str, Any] = {"path": str(path), "seconds": round(time.perf_counter() - start, 2)}
    elif args.child == "mosaic":
        result = build_mosaic(Path(args.raster))
    elif args.child == "peer":
        result = child_peer(Path(args.raster), args.tile, args.overlap, Path(args.classes), args.t0)
    else:
        result = child_ours(args.child, Path(args.raster), args.tile, args.overlap, args.margin, Path(args.classes),
                            args.t0)
    result["vmhwm_mib"] = _common.mib(_common.proc_status_kib("VmHWM"))
    print(json.dumps(result))


def build_mosaic(path: Path) -> dict[str, Any]:
    """6144 × 3072 px: the 10 m scene 4 × 2 times, mirrored so that neighbours meet without a jump."""
    import numpy as np
    from osgeo import gdal

    src = gdal.Open(str(SCENE))
    data = src.ReadAsArray()
    rows = np.concatenate([data, data[:, ::-1]] * 2, axis=1)
    full = np.concatenate([rows, rows[:, :, ::-1]] * 2, axis=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp), full.shape[2], full.shape[1], full.shape[0], gdal.GDT_UInt16,
                                              ["TILED=YES", "COMPRESS=DEFLATE", "PREDICTOR=2", "BIGTIFF=IF_SAFER"])
    ds.SetProjection(src.GetProjection())
    ds.SetGeoTransform(src.GetGeoTransform())
    for i in range(full.shape[0]):
        band = ds.GetRasterBand(i + 1)
        band.SetDescription(src.GetRasterBand(i + 1).GetDescription())
        band.WriteArray(full[i])
    ds = None
    tmp.replace(path)
    return {"mosaic": str(path), "shape": [int(full.shape[1]), int(full.shape[2])]}


# --------------------------------------------------------------------------------------------------- parent
def spawn(mode: str, *extra: str, timeout_s: float = 3600) -> tuple[_common.ChildResult, dict[str, Any]]:
    cmd = [str(_common.PYTHON), __file__, "--child", mode, "--t0", repr(time.time()), *extra]
    result = _common.run_child(cmd, timeout_s)
    report = result.last_json()
    if result.returncode != 0 or report is None:
        raise SystemExit(f"child {mode} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return result, report


def jobs() -> list[dict[str, Any]]:
    """(configuration, path, overlap, edge margin): equal tiling at the peer's 15 % and at 52 px, and defaults."""
    peer = round(TILE * PEER_OVERLAP_PERCENT / 100)
    out = []
    for label, overlap in ((f"equal_{peer}px", peer), ("equal_52px", 52)):
        out += [{"config": label, "path": p, "overlap": overlap, "margin": 0} for p in ("peer", "torch", "onnx")]
    out += [{"config": "ours_defaults", "path": p, "overlap": None, "margin": None} for p in ("torch", "onnx")]
    return out


def measure(raster: Path, repeats: int, work: Path, paths: set[str]) -> dict[str, Any]:
    """Every job ``repeats`` times, alternating paths; medians and agreements per configuration."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    todo = [j for j in jobs() if j["path"] in paths]
    for rep in range(repeats):
        for job in todo:
            classes = work / f"{job['config']}-{job['path']}-{rep}.npy"
            extra = ["--raster", str(raster), "--tile", str(TILE), "--classes", str(classes)]
            extra += [] if job["overlap"] is None else ["--overlap", str(job["overlap"])]
            extra += [] if job["margin"] is None else ["--margin", str(job["margin"])]
            mode = {"onnx": "onnxruntime"}.get(job["path"], job["path"])
            load = _common.load_average()
            result, report = spawn(mode, *extra)
            entry = {"wall_s": round(result.wall_s, 2), "maxrss_mib": _common.mib(result.maxrss_kib),
                     "load_1min": load, **report}
            runs.setdefault((job["config"], job["path"]), []).append(entry)
            print(json.dumps({"config": job["config"], "path": job["path"], "repeat": rep, **entry}),
                  file=sys.stderr)
    return summarise(runs, work)


def summarise(runs: dict[tuple[str, str], list[dict[str, Any]]], work: Path) -> dict[str, Any]:
    import numpy as np

    configs: dict[str, Any] = {}
    for (config, path), entries in runs.items():
        keys = ("wall_s", "first_tile_s", "vmhwm_mib", "maxrss_mib")
        summary = {f"median_{k}": _common.median([e[k] for e in entries if e.get(k) is not None]) for k in keys}
        summary.update(coverage=entries[0].get("coverage"), tiles=entries[0].get("tiles"), runs=entries)
        configs.setdefault(config, {})[path] = summary
    for config, paths in configs.items():
        arrays = {p: np.load(work / f"{config}-{p}-0.npy") for p in paths}
        names = sorted(arrays)
        paths["agreement_percent"] = {f"{a}_vs_{b}": round(100 * float((arrays[a] == arrays[b]).mean()), 4)
                                      for i, a in enumerate(names) for b in names[i + 1:]}
        if "peer" in paths:
            peer = paths["peer"]
            for ours in ("torch", "onnx"):
                if ours in paths:
                    paths[f"{ours}_speedup_vs_peer"] = round(peer["median_wall_s"] / paths[ours]["median_wall_s"], 2)
                    paths[f"{ours}_memory_vs_peer"] = round(paths[ours]["median_maxrss_mib"]
                                                            / peer["median_maxrss_mib"], 2)
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mosaic", action="store_true", help="also the 6144 × 3072 mosaic")
    parser.add_argument("--mosaic-repeats", type=int, default=1)
    parser.add_argument("--mosaic-only", action="store_true")
    parser.add_argument("--paths", nargs="+", default=["peer", "torch", "onnx"])
    parser.add_argument("--out", type=Path, default=_common.RESULTS / "runtimes.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    for name in ("raster", "classes"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    for name in ("tile", "overlap", "margin"):
        parser.add_argument(f"--{name}", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    results: dict[str, Any] = {"machine": _common.machine_info(), "tile": TILE, "package": str(PACKAGE)}
    export, report = spawn("export")
    results["export"] = {**report, "wall_s": round(export.wall_s, 2)}
    with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as tmp:
        if not args.mosaic_only:
            results["scene_10m"] = measure(SCENE, args.repeats, Path(tmp), set(args.paths))
        if args.mosaic or args.mosaic_only:
            if not MOSAIC.exists():
                spawn("mosaic", "--raster", str(MOSAIC))
            results["mosaic_6144x3072"] = measure(MOSAIC, args.mosaic_repeats, Path(tmp), set(args.paths))
    _common.write_json(args.out, results)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
