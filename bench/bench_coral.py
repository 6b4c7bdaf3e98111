"""Side by side with the coral script (the peer QGIS Processing script in /work/shared/peers/): wall time, peak RSS.

Same raster, same weights:

* raster: N×N (default 3000²) 8-band uint16 GeoTIFF (tiled, DEFLATE) built from the real Sentinel-2 10 m scene,
  mirrored (symmetric padding) to size: bands B01*, B02, B03, B04, B05, B06, B07, B08 (*B01 is a copy of B02, the
  scene has no coastal band), so the coral script's RGB choice [4, 3, 2] really is red, green, blue;
* model: ``smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=1)`` with a fixed seed, saved twice:
  as the coral script expects (``torch.save(model)``, a whole pickled module: it does ``torch.load(...,
  weights_only=False)`` and reads ``model.encoder.conv1``) and as a Deep Raster package (``save_package`` with the
  state dict; bands given explicitly as band numbers (4, 3, 2) in the request; activation ``sigmoid`` with one
  output channel and two classes; tile 512, overlap 64; ``value_scale`` 1/10000 and NO normalisation).
  The inputs cannot be made equal: the coral script normalises with one global min/max over all bands of the whole
  raster (and clips logits to 0–1 instead of applying a sigmoid), so only the cost is compared, not the values.

Each contestant runs in a fresh child process, timed from start to exit, its peak RSS taken from ``os.wait4``
(``ru_maxrss``); the parent imports neither torch nor GDAL. Theirs: ``.venv/bin/python
/work/shared/peers/run_coral_script.py RASTER MODEL OUT`` (QGIS app start included; it computes 2048² blocks with
512 overlap on the whole raster held in RAM, NDWI masking off). Ours: ``classify_raster`` writing the float32
probability raster only (what theirs writes), at tile sizes 512 and 256 with the package's overlap (64), batch 4;
the child also reports its RSS after imports and ``RunStats``.

The coral script feeds edge blocks of whatever size is left (3000 − 1536 = 1464 px) to the U-Net. smp 0.6's Unet
accepts that (its decoder resizes to the skip connections), other architectures and older smp versions refuse sizes
that are not multiples of 32: should the script fail on the requested size, the failure is recorded and the
comparison is repeated on the next multiple of 32 (3008), where every block it cuts is valid.

Noise: the machine is shared, so ``--repeats`` rounds (default 2) run in alternating order (theirs first, then ours
first); each round's our/their ratios pair runs of the same round, and the medians are reported. The 1-minute load
average is recorded beside every run.

Run: ``.venv/bin/python bench/bench_coral.py [--size 3000] [--tiles 512,256] [--repeats 2] [--out ...]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import _common

CORAL_RUNNER = Path("/work/shared/peers/run_coral_script.py")
SEED = 0
PACKAGE_OVERLAP = 64


def raster_path(size: int) -> Path:
    """Cached N×N 8-band raster."""
    return _common.DATA / f"coral_s2_8b_uint16_{size}.tif"


def model_paths() -> tuple[Path, Path]:
    """The pickled whole model (theirs) and the Deep Raster package folder (ours)."""
    return _common.DATA / "coral_unet_resnet18.pth", _common.DATA / "coral-unet-resnet18-package"


# --------------------------------------------------------------------------------------------------- preparation
def prepare_raster(size: int, scene: Path) -> None:
    """Mirror the real scene's bands to ``size``² and write the 8-band raster (runs in a child)."""
    import numpy as np
    from osgeo import gdal

    gdal.UseExceptions()
    src = gdal.Open(str(scene))
    names = [src.GetRasterBand(i + 1).GetDescription() for i in range(src.RasterCount)]
    wanted = ["B02", "B02", "B03", "B04", "B05", "B06", "B07", "B08"]  # B01 slot filled with B02
    out_names = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08"]
    path = raster_path(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp), size, size, 8, gdal.GDT_UInt16,
                                              ["TILED=YES", "COMPRESS=DEFLATE", "PREDICTOR=2", "NUM_THREADS=ALL_CPUS"])
    ds.SetProjection(src.GetProjection())
    ds.SetGeoTransform(src.GetGeoTransform())
    for i, (band_name, out_name) in enumerate(zip(wanted, out_names, strict=True)):
        arr = src.GetRasterBand(names.index(band_name) + 1).ReadAsArray()
        pad = ((0, max(size - arr.shape[0], 0)), (0, max(size - arr.shape[1], 0)))
        arr = np.pad(arr, pad, mode="symmetric")[:size, :size]
        band = ds.GetRasterBand(i + 1)
        band.SetDescription(out_name)
        band.WriteArray(arr)
    ds = None
    tmp.replace(path)


def prepare_models() -> None:
    """The seeded U-Net as a pickled module (theirs) and as a Deep Raster package (ours) (runs in a child)."""
    import segmentation_models_pytorch as smp
    import torch

    _common.ensure_plugin_path()
    from deepraster.models.package import save_package

    torch.manual_seed(SEED)
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=1).eval()
    pth, folder = model_paths()
    pth.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model, pth)
    description = {
        "name": "coral-unet-resnet18-random", "version": "0.0.1",
        "description": "Untrained (seed 0) U-Net resnet18 for the coral-script benchmark: same weights as "
                       "coral_unet_resnet18.pth.",
        "license": "CC0-1.0", "task": "pixel_classification",
        "architecture": {"framework": "smp", "arch": "Unet", "encoder": "resnet18", "in_channels": 3,
                         "out_channels": 1},
        "input": {"bands": [{"name": "red", "aliases": ["B04"]}, {"name": "green", "aliases": ["B03"]},
                            {"name": "blue", "aliases": ["B02"]}],
                  "value_scale": 1e-4, "value_offset": 0.0, "normalization": {"type": "none"}},
        "inference": {"tile_size": 512, "overlap": PACKAGE_OVERLAP, "size_divisor": 32, "activation": "sigmoid"},
        "classes": [{"value": 0, "name": "other", "color": "#1f4e79"},
                    {"value": 1, "name": "coral", "color": "#ff7f50"}],
    }
    if folder.exists():
        shutil.rmtree(folder)
    save_package(folder, description, model.state_dict())


# --------------------------------------------------------------------------------------------------- our child
def ours(size: int, tile: int, out: Path) -> dict[str, Any]:
    """Run ``classify_raster`` (probabilities only) in this fresh child; report memory and stats."""
    t0 = time.perf_counter()
    _common.ensure_plugin_path()
    import torch  # noqa: F401 (part of the import baseline, as classify_raster will import it)
    from deepraster.models.package import load_package
    from deepraster.models.pixel_classification import ClassifyRequest, classify_raster
    from osgeo import gdal  # noqa: F401

    rss_imports = _common.proc_status_kib("VmRSS")
    import_s = time.perf_counter() - t0
    package = load_package(model_paths()[1])
    request = ClassifyRequest(raster=str(raster_path(size)), package=package, probabilities_path=str(out),
                              bands=(4, 3, 2), tile_size=tile, device="cpu")
    t1 = time.perf_counter()
    stats = classify_raster(request)
    call_s = time.perf_counter() - t1
    hwm = _common.proc_status_kib("VmHWM")
    return {"rss_after_imports_mib": _common.mib(rss_imports), "peak_vmhwm_mib": _common.mib(hwm),
            "import_s": round(import_s, 2), "classify_call_s": round(call_s, 2),
            "run_stats": {"tiles_total": stats.tiles_total, "tiles_predicted": stats.tiles_predicted,
                          "batches": stats.batches, "predict_s": round(stats.predict_seconds, 2),
                          "total_s": round(stats.total_seconds, 2), "efficiency": round(stats.efficiency, 4)}}


# --------------------------------------------------------------------------------------------------- parent
def run_prepare(kind: str, size: int, timeout: float) -> float:
    """Run a preparation step in a child; returns its wall time."""
    res = _common.run_child([str(_common.PYTHON), __file__, "--prepare", kind, "--size", str(size)], timeout)
    if res.returncode != 0:
        raise RuntimeError(f"preparing {kind} failed (rc {res.returncode}):\n{res.stderr[-3000:]}")
    return round(res.wall_s, 1)


def run_theirs(size: int, timeout: float) -> dict[str, Any]:
    """The coral script on the size² raster, via its headless runner."""
    out = _common.DATA / f"coral-out-theirs-{size}.tif"
    out.unlink(missing_ok=True)
    res = _common.run_child([str(_common.PYTHON), str(CORAL_RUNNER), str(raster_path(size)),
                             str(model_paths()[0]), str(out)], timeout)
    ok = res.returncode == 0 and out.exists()
    report: dict[str, Any] = {"who": "coral script", "size": size, "ok": ok, "wall_s": round(res.wall_s, 2),
                              "peak_ru_maxrss_mib": _common.mib(res.maxrss_kib), "returncode": res.returncode,
                              "load_average_before_after": [round(res.load_before, 2), round(res.load_after, 2)]}
    if not ok:
        lines = [line for line in res.stderr.splitlines() + res.stdout.splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line or "Wrong input shape" in line]
        report["error"] = (errors or lines or ["no output"])[-1][-500:]
        report["stderr_tail"] = res.stderr[-2000:]
    out.unlink(missing_ok=True)
    return report


def run_ours(size: int, tile: int, timeout: float) -> dict[str, Any]:
    """``classify_raster`` on the size² raster at ``tile`` px, in a fresh child."""
    out = _common.DATA / f"coral-out-ours-{size}-{tile}.tif"
    res = _common.run_child([str(_common.PYTHON), __file__, "--ours", str(tile), "--size", str(size),
                             "--child-out", str(out)], timeout)
    report: dict[str, Any] = {"who": f"deepraster tile {tile}", "size": size, "tile_size": tile,
                              "overlap": PACKAGE_OVERLAP, "ok": res.returncode == 0 and out.exists(),
                              "wall_s": round(res.wall_s, 2), "peak_ru_maxrss_mib": _common.mib(res.maxrss_kib),
                              "returncode": res.returncode,
                              "load_average_before_after": [round(res.load_before, 2), round(res.load_after, 2)]}
    child = res.last_json()
    if child:
        report.update(child)
    if not report["ok"]:
        report["stderr_tail"] = res.stderr[-2000:]
    out.unlink(missing_ok=True)
    return report


def _show(run: dict[str, Any]) -> str:
    text = f"{run['who']} {run['size']}²: {'ok' if run['ok'] else 'FAILED'} {run['wall_s']:.1f} s, peak " \
           f"{run['peak_ru_maxrss_mib']:.0f} MiB (load {run['load_average_before_after'][0]:.1f})"
    return text if run["ok"] else f"{text} ({run.get('error', 'see stderr_tail')})"


def compare(size: int, tiles: list[int], repeats: int, timeout: float) -> dict[str, Any]:
    """Theirs and ours at every tile size on one raster, ``repeats`` rounds in alternating order, with ratios.

    Round k runs theirs first and ours after (even k) or ours first (odd k), so a slow spell on the machine hits
    both sides; each round's ratios pair runs from the same round, and the medians over rounds are reported.
    """
    rounds = []
    for k in range(repeats):
        order: list[int | None] = [None, *tiles] if k % 2 == 0 else [*tiles, None]
        runs: dict[str, dict[str, Any]] = {}
        for tile in order:
            run = run_theirs(size, timeout) if tile is None else run_ours(size, tile, timeout)
            runs["theirs" if tile is None else str(tile)] = run
            print(f"  round {k + 1}/{repeats}: {_show(run)}", flush=True)
            if tile is None and not run["ok"]:
                break
        theirs = runs["theirs"]
        ratios = {}
        for tile in tiles:
            mine = runs.get(str(tile))
            if mine and mine["ok"] and theirs["ok"]:
                ratios[str(tile)] = {"wall_ours_over_theirs": round(mine["wall_s"] / theirs["wall_s"], 3),
                                     "peak_ours_over_theirs": round(mine["peak_ru_maxrss_mib"]
                                                                    / theirs["peak_ru_maxrss_mib"], 3)}
        rounds.append({"runs": runs, "ratios": ratios})
        if not theirs["ok"]:
            break
    med = _common.median
    summary: dict[str, Any] = {}
    ok_theirs = [r["runs"]["theirs"] for r in rounds if r["runs"]["theirs"]["ok"]]
    if ok_theirs:
        summary["theirs"] = {"wall_s": med([r["wall_s"] for r in ok_theirs]),
                             "peak_mib": med([r["peak_ru_maxrss_mib"] for r in ok_theirs])}
    for tile in tiles:
        mine = [r["runs"][str(tile)] for r in rounds if r["runs"].get(str(tile), {}).get("ok")]
        ratios = [r["ratios"][str(tile)] for r in rounds if str(tile) in r["ratios"]]
        if not mine:
            continue
        entry: dict[str, Any] = {"tile_size": tile, "overlap": PACKAGE_OVERLAP,
                                 "wall_s": med([r["wall_s"] for r in mine]),
                                 "peak_mib": med([r["peak_ru_maxrss_mib"] for r in mine]),
                                 "peak_vmhwm_mib": med([r["peak_vmhwm_mib"] for r in mine if "peak_vmhwm_mib" in r]
                                                       or [0.0]),
                                 "rss_after_imports_mib": med([r.get("rss_after_imports_mib", 0.0) for r in mine]),
                                 "predict_s": med([r["run_stats"]["predict_s"] for r in mine if "run_stats" in r]
                                                  or [0.0]),
                                 "run_stats_efficiency": med([r["run_stats"]["efficiency"] for r in mine
                                                              if "run_stats" in r] or [0.0])}
        if ratios:
            entry["median_ratio_wall_ours_over_theirs"] = med([r["wall_ours_over_theirs"] for r in ratios])
            entry["median_ratio_peak_ours_over_theirs"] = med([r["peak_ours_over_theirs"] for r in ratios])
        summary[f"ours_{tile}"] = entry
    return {"size": size, "theirs_ok": bool(ok_theirs), "rounds": rounds, "summary": summary}


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=3000, help="raster edge in pixels (default 3000)")
    parser.add_argument("--tiles", default="512,256", help="our tile sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=2, help="rounds, in alternating order (default 2)")
    parser.add_argument("--no-fallback", action="store_true",
                        help="do not retry on the next multiple of 32 when the coral script fails")
    parser.add_argument("--scene", type=Path, default=_common.ROOT / ".data/s2/s2_l1c_10m.tif")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per child, seconds")
    parser.add_argument("--out", type=Path, default=_common.RESULTS / "coral.json")
    parser.add_argument("--prepare", choices=("raster", "models"), help=argparse.SUPPRESS)
    parser.add_argument("--ours", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.prepare == "raster":
        prepare_raster(args.size, args.scene)
        return None
    if args.prepare == "models":
        prepare_models()
        return None
    if args.ours:
        print(json.dumps(ours(args.size, args.ours, args.child_out)))
        return None

    bench_start = time.perf_counter()
    machine = _common.machine_info()
    tiles = [int(t) for t in args.tiles.split(",") if t.strip()]
    prep: dict[str, Any] = {"models_s": run_prepare("models", args.size, args.timeout)}
    sizes = [args.size]
    fallback = -(-args.size // 32) * 32
    comparisons = []
    for size in sizes:
        if not raster_path(size).exists():
            prep[f"raster_{size}_s"] = run_prepare("raster", size, args.timeout)
        comparisons.append(compare(size, tiles, args.repeats, args.timeout))
        if not comparisons[-1]["theirs_ok"] and fallback != size and not args.no_fallback and fallback not in sizes:
            print(f"  the coral script failed on {size}²: comparing again on {fallback}²", flush=True)
            sizes.append(fallback)
    valid = [c for c in comparisons if c["theirs_ok"]]
    headline = valid[-1] if valid else comparisons[-1]
    result = {"benchmark": "coral", "machine": machine, "requested_size": args.size,
              "repeats": args.repeats, "bands_ours": [4, 3, 2], "value_scale_ours": 1e-4,
              "normalisation_ours": "none",
              "note": "Inputs differ by design: the coral script min/max-normalises over all bands of the whole "
                      "raster and clips logits instead of a sigmoid; only cost is compared. Peak memory is "
                      "ru_maxrss (includes interpreter exit) for both sides.",
              "preparation_s": prep, "comparisons": comparisons, "headline_size": headline["size"],
              "headline": headline["summary"],
              "bench_seconds": round(time.perf_counter() - bench_start, 1)}
    _common.write_json(args.out, result)
    summary = headline["summary"]
    parts = [f"theirs {summary['theirs']['wall_s']:.0f} s / {summary['theirs']['peak_mib']:.0f} MiB"
             if "theirs" in summary else "theirs FAILED"]
    for tile in tiles:
        mine = summary.get(f"ours_{tile}")
        if not mine:
            parts.append(f"ours@{tile} FAILED")
            continue
        text = f"ours@{tile} {mine['wall_s']:.0f} s / {mine['peak_mib']:.0f} MiB"
        if "median_ratio_wall_ours_over_theirs" in mine:
            text += (f" (time ×{mine['median_ratio_wall_ours_over_theirs']:.2f}, memory "
                     f"×{mine['median_ratio_peak_ours_over_theirs']:.2f})")
        parts.append(text)
    failed_first = "" if comparisons[0]["theirs_ok"] else f"coral script fails on {comparisons[0]['size']}²; "
    print(f"coral: {failed_first}{headline['size']}², median of {args.repeats}: " + " | ".join(parts)
          + f" | {result['bench_seconds']:.0f} s -> {args.out}")
    return result


if __name__ == "__main__":
    main()
