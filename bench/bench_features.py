"""Feature extraction: efficiency, tiling agreement, int8, memory against raster size, and IAMAP's approach.

Sections (each runs in a fresh child process; the parent imports neither torch nor GDAL):

* ``efficiency``: the whole pipeline (read, normalise, encode, blend, write, checkpoints) against the raw encoder
  forward on the same tiles in the same batches: ratio = raw time ÷ pipeline time (1.0: the engine costs
  nothing). Real Sentinel-2 scene (1536 × 768 px); the ukis-csmask EfficientNet-B4 encoder at stride 8, and a
  ViT-S/16 (random weights: speed does not depend on them) on 4 bands.
* ``sweep``: mean cosine similarity of tiled features to the encoder applied to the whole scene at once, for
  strides 8/16/32 and several tile sizes and overlaps.
* ``int8``: ViT-S/16 pipeline in float32 and with dynamic int8 quantisation: speed-up and cosine similarity.
* ``memory``: peak RSS (VmHWM) of the pipeline on generated 4-band rasters of growing size (timm ResNet-18 at
  stride 16); the same engine must keep the peak flat.
* ``iamap``: a faithful re-implementation of IAMAP's encoder loop (one GeoTIFF per tile written as it is encoded,
  batch 1 on the CPU, the raster reopened for every tile, then a merge of all tiles with the "first" method,
  IAMAP's default) against our pipeline on the same scene, encoder, tiles and normalisation: time, temporary disk,
  peak memory and agreement with the whole-scene result.

Run: ``.venv/bin/python bench/bench_features.py [--sections efficiency,sweep,int8,memory,iamap] [--quick]``;
results go to ``bench/results/features.json``. Figures from a shared machine are only comparable within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import _common
import _features_fixtures as fx
from _iamap_style import iamap_style_run

SECTIONS = ("efficiency", "sweep", "int8", "memory", "iamap")


def _raw_forward_seconds(request) -> tuple[float, int]:
    """Time the bare encoder over the tiles the pipeline encodes, in the same batches (within grid rows)."""
    import numpy as np
    import torch
    from deepraster.models.feature_extraction import build_encoder, resolve_bands, resolve_tiling, resolve_transform
    from deepraster.tiling.grid import TileGrid
    from deepraster.tiling.reader import StripReader
    from deepraster.tiling.source import RasterSource

    source = RasterSource.open(request.raster)
    bands = resolve_bands(request, source)
    module, enc = build_encoder(request, len(bands), lambda m: None)
    transform = resolve_transform(request, source, bands, enc, source.window, lambda m: None)
    tile, overlap = resolve_tiling(request, enc, lambda m: None)
    grid = TileGrid(source.window, tile, overlap, align=enc.stride)
    batches = []
    for strip in StripReader(source, grid, transform):
        tiles = [strip.data[:, :, t.window.col_off - strip.window.col_off:t.window.col_end - strip.window.col_off]
                 for t in grid.row(strip.grid_row)]
        for i in range(0, len(tiles), request.batch_size):
            batches.append(torch.from_numpy(np.ascontiguousarray(np.stack(tiles[i:i + request.batch_size]))))
    module.eval()
    with torch.inference_mode():
        module(batches[0])  # warm-up, as the pipeline's first batch is not
        start = time.perf_counter()
        for b in batches:
            module(b).float().numpy()
    return time.perf_counter() - start, sum(len(b) for b in batches)


def child_efficiency(repeats: int) -> dict[str, Any]:
    from deepraster.models.feature_extraction import extract_features

    out: dict[str, Any] = {}
    cases = {"efficientnet_b4_stride8": lambda p: fx.package_request(p, 8),
             "vit_s16_4bands": lambda p: fx.vit_request(p)}
    for name, make in cases.items():
        pipeline, raw, predict, tiles = [], [], [], 0
        extract_features(make(fx.WORK / f"warm_{name}.tif"))  # first run: caches, lazy imports
        for r in range(repeats):  # interleaved, as the machine's load changes
            result = extract_features(make(fx.WORK / f"eff_{name}_{r}.tif"))
            pipeline.append(result.stats.total_seconds)
            predict.append(result.stats.predict_seconds)
            seconds, tiles = _raw_forward_seconds(make(fx.WORK / "unused.tif"))
            raw.append(seconds)
        mpx = tiles * result.tile ** 2 / 1e6
        out[name] = {"tiles": tiles, "tile": result.tile, "overlap": result.overlap,
                     "pipeline_s": [round(s, 2) for s in pipeline], "raw_forward_s": [round(s, 2) for s in raw],
                     "pipeline_median_s": round(_common.median(pipeline), 2),
                     "raw_median_s": round(_common.median(raw), 2),
                     "ratio_raw_over_pipeline": round(_common.median(raw) / _common.median(pipeline), 3),
                     "ratio_of_best_runs": round(min(raw) / min(pipeline), 3),
                     "ratios_per_repeat": [round(a / b, 3) for a, b in zip(raw, pipeline, strict=True)],
                     "encoded_mpx_per_s": round(mpx / _common.median(pipeline), 3),
                     "share_in_model_per_run": [round(p / t, 3) for p, t in zip(predict, pipeline, strict=True)],
                     "share_in_model_median": round(_common.median([p / t for p, t in zip(predict, pipeline,
                                                                                          strict=True)]), 3),
                     "encoder_in_pipeline_over_raw": round(_common.median(predict) / _common.median(raw), 3)}
    return out


def child_sweep(quick: bool) -> dict[str, Any]:
    from deepraster.models.feature_extraction import extract_features
    from osgeo import gdal

    cases = [(8, 256, 64), (8, 256, 128), (16, 256, 64), (16, 512, 128), (16, 512, 256), (32, 256, 64),
             (32, 512, 128), (32, 512, 256), (32, 768, 384)]
    if quick:
        cases = [(8, 256, 64), (16, 512, 128), (32, 512, 128)]
    rows = []
    for stride, tile, overlap in cases:
        ref = fx.reference(stride)
        path = fx.WORK / f"sweep_{stride}_{tile}_{overlap}.tif"
        result = extract_features(fx.package_request(path, stride, tile_size=tile, overlap=overlap, resume=False))
        rows.append({"stride": stride, "tile": tile, "overlap": overlap, "tiles": result.stats.tiles_predicted,
                     "seconds": round(result.stats.total_seconds, 1),
                     "cosine_to_whole_scene": fx.cosine(gdal.Open(str(path)).ReadAsArray(), ref)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return {"encoder": "ukis-csmask-6b-l1c EfficientNet-B4 encoder", "scene": str(fx.SCENE), "runs": rows}


def child_int8(repeats: int) -> dict[str, Any]:
    from deepraster.models.feature_extraction import extract_features
    from osgeo import gdal

    times: dict[str, list[float]] = {"float32": [], "int8": []}
    extract_features(fx.vit_request(fx.WORK / "int8_warm.tif", int8=True))
    for _ in range(repeats):
        for mode in ("float32", "int8"):
            result = extract_features(fx.vit_request(fx.WORK / f"vit_{mode}.tif", int8=mode == "int8", resume=False))
            times[mode].append(result.stats.total_seconds)
    a = gdal.Open(str(fx.WORK / "vit_float32.tif")).ReadAsArray()
    b = gdal.Open(str(fx.WORK / "vit_int8.tif")).ReadAsArray()
    f32, i8 = _common.median(times["float32"]), _common.median(times["int8"])
    return {"model": "ViT-S/16 (random weights), 4 bands, real scene 1536 × 768 px", "float32_s": times["float32"],
            "int8_s": times["int8"], "speedup_median": round(f32 / i8, 2),
            "speedup_best_runs": round(min(times["float32"]) / min(times["int8"]), 2),
            "cosine_int8_to_float32": fx.cosine(b, a)}


def _memory_raster(spec: str) -> tuple[Path, int, int]:
    """``N`` → the generated N² raster; ``WxH`` → a W × H window (a VRT) of the generated 20000² raster."""
    sys.path.insert(0, str(_common.BENCH))
    import bench_memory

    if "x" not in spec:
        return bench_memory.data_path(int(spec)), int(spec), int(spec)
    from osgeo import gdal

    width, height = (int(v) for v in spec.split("x"))
    path = fx.WORK / f"window_{width}x{height}.vrt"
    if not path.exists():
        gdal.Translate(str(path), str(bench_memory.data_path(20000)), format="VRT", srcWin=[0, 0, width, height])
    return path, width, height


def child_memory(spec: str) -> dict[str, Any]:
    from deepraster.models.feature_extraction import FeatureRequest, extract_features

    weights = fx.resnet_weights()
    raster, width, height = _memory_raster(spec)
    rss_imports = _common.proc_status_kib("VmRSS")
    out = fx.WORK / f"memory_{spec}.tif"
    request = FeatureRequest(raster=str(raster), output=str(out), timm_model="resnet18",
                             weights=str(weights), stride=16, value_scale=1e-4, device="cpu", resume=True)
    result = extract_features(request)
    report = {"raster": f"{width} x {height}", "mpx": width * height / 1e6, "tiles": result.stats.tiles_predicted,
              "tile": result.tile, "overlap": result.overlap, "seconds": round(result.stats.total_seconds, 1),
              "output_bytes": out.stat().st_size, "rss_after_imports_mib": _common.mib(rss_imports),
              "peak_vmhwm_mib": _common.mib(_common.proc_status_kib("VmHWM"))}
    out.unlink()
    return report


def child_reference() -> dict[str, Any]:
    """Compute and cache the whole-scene features (a big forward pass: kept out of the measured children)."""
    return {"shape": list(fx.reference(8).shape)}


def child_ours_on_scene(batch: int) -> dict[str, Any]:
    """Our pipeline on the scene; ``seconds`` is the run itself (encoder already loaded), as for IAMAP's loop."""
    import numpy as np
    from deepraster.models.feature_extraction import extract_features
    from osgeo import gdal

    path = fx.WORK / f"ours_scene_b{batch}.tif"
    ref = np.load(fx.WORK / "whole_scene_stride8.npy")
    rss = _common.proc_status_kib("VmRSS")
    start = time.perf_counter()
    result = extract_features(fx.package_request(path, 8, batch_size=batch))
    wall = time.perf_counter() - start
    return {"batch": batch, "seconds": round(result.stats.total_seconds, 2),
            "seconds_with_model_loading": round(wall, 2),
            "peak_vmhwm_mib": _common.mib(_common.proc_status_kib("VmHWM")), "rss_before_mib": _common.mib(rss),
            "output_bytes": path.stat().st_size, "temporary_peak_bytes": path.stat().st_size,
            "tiles": result.stats.tiles_predicted,
            "cosine_to_whole_scene": fx.cosine(gdal.Open(str(path)).ReadAsArray(), ref)}


def child_iamap(size: int) -> dict[str, Any]:
    """IAMAP's encoder loop (encoder.py), re-implemented with GDAL (rasterio is not in this environment; GDAL does the
    same reads and writes): the NoBordersGridGeoSampler grid, the raster opened again for every sample (cache=False),
    batch 1 on the CPU, one float32 GeoTIFF per tile written as soon as it is encoded, every 500 tiles
    (TEMP_FILES_CLEANUP_FREQ) all tiles and the previous partial mosaic merged into ``merged_tmp.tif`` and the tiles
    deleted, and a final merge with the "first" method (IAMAP's default), all in memory as rasterio.merge does.

    ``size`` 0: the real scene with the ukis-csmask encoder at stride 8 (the package's normalisation, as ours);
    otherwise the generated size² raster with the ResNet-18 of the memory section at stride 16.
    """
    import numpy as np
    from deepraster.models.encoders import package_encoder, timm_encoder
    from deepraster.models.package import load_package
    from osgeo import gdal

    gdal.UseExceptions()
    if size == 0:
        package = load_package(fx.PACKAGE)
        module, _ = package_encoder(package, 8)
        raster, bands, scale = fx.SCENE, [1, 2, 3, 7, 9, 10], 1e-4
        mean = np.array(package.normalization.a, np.float32)[:, None, None]
        std = np.array(package.normalization.b, np.float32)[:, None, None]
        ref = np.load(fx.WORK / "whole_scene_stride8.npy")
    else:
        sys.path.insert(0, str(_common.BENCH))
        import bench_memory

        module, _ = timm_encoder("resnet18", 4, fx.resnet_weights(), 16)
        raster, bands, scale, ref = bench_memory.data_path(size), [1, 2, 3, 4], 1e-4, None
        mean, std = np.float32(0.0), np.float32(1.0)
    module.eval()
    merged, report = iamap_style_run(module, raster, bands, scale, mean, std, fx.WORK / f"iamap_tmp_{size}",
                                     fx.WORK / f"iamap_merged_{size}.tif")
    report = {"size": size, **report}
    if ref is not None:
        report["cosine_to_whole_scene"] = fx.cosine(gdal.Open(str(merged)).ReadAsArray(), ref)
    merged.unlink()
    return report


# --------------------------------------------------------------------------------------------------- parent


def run_section(args: list[str], timeout: float) -> dict[str, Any]:
    res = _common.run_child([str(_common.PYTHON), __file__, *args], timeout)
    report = res.last_json()
    if res.returncode != 0 or report is None:
        return {"error": f"rc {res.returncode}", "stderr_tail": res.stderr[-3000:]}
    report["child_wall_s"] = round(res.wall_s, 1)
    report["child_ru_maxrss_mib"] = _common.mib(res.maxrss_kib)
    report["load_average_before_after"] = [round(getattr(res, "load_before", 0.0), 2),
                                           round(getattr(res, "load_after", 0.0), 2)]
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="1000,5000", help="IAMAP-style runs on generated N² rasters")
    parser.add_argument("--memory-sizes", default="1000,1000x5000,1000x20000,5000",
                        help="N (N² raster) or WxH (a window of the 20000² raster): memory against size")
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer sweep cases, 1 repeat")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--out", type=Path, default=_common.RESULTS / "features.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats

    if args.child:
        fx.setup()
        report = {"efficiency": lambda: child_efficiency(repeats), "sweep": lambda: child_sweep(args.quick),
                  "int8": lambda: child_int8(repeats), "memory": lambda: child_memory(args.spec),
                  "reference": child_reference, "ours": lambda: child_ours_on_scene(args.size or 4),
                  "iamap": lambda: child_iamap(args.size or 0)}[args.child]()
        print(json.dumps(report), flush=True)
        return

    results: dict[str, Any] = {}
    if args.out.exists():  # a run of some sections updates those and keeps the others
        results = json.loads(args.out.read_text(encoding="utf-8"))
    results.update({"benchmark": "features", "machine": _common.machine_info()})
    sections = [s for s in args.sections.split(",") if s]
    extra = ["--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
    for section in sections:
        start = time.perf_counter()
        if section == "memory":
            sys.path.insert(0, str(_common.BENCH))
            import bench_memory

            # GDAL's block cache is process-wide and fills up to GDAL_CACHEMAX (5 % of RAM by default) whatever
            # the engine does; a fixed 64 MB cap shows the engine's own memory (QGIS sets its own cap).
            os.environ["GDAL_CACHEMAX"] = "64"
            runs = []
            for spec in args.memory_sizes.split(","):
                bench_memory.ensure_data(20000 if "x" in spec else int(spec), args.timeout)
                runs.append(run_section(["--child", "memory", "--spec", spec], args.timeout))
            os.environ.pop("GDAL_CACHEMAX")
            results["memory"] = {"encoder": "timm resnet18, stride 16, 4 bands", "gdal_cachemax_mb": 64, "runs": runs}
        elif section == "iamap":
            run_section(["--child", "reference"], args.timeout)
            runs: dict[str, list] = {"ours_batch1": [], "iamap_style": [], "ours_batch4": []}
            for _ in range(repeats):  # interleaved: the machine's load changes over minutes
                runs["ours_batch1"].append(run_section(["--child", "ours", "--size", "1"], args.timeout))
                runs["iamap_style"].append(run_section(["--child", "iamap", "--size", "0"], args.timeout))
                runs["ours_batch4"].append(run_section(["--child", "ours", "--size", "4"], args.timeout))
            summary = {name: {"seconds_min": min(r["seconds"] for r in rs if "seconds" in r),
                              "seconds_median": _common.median([r["seconds"] for r in rs if "seconds" in r]),
                              **{k: rs[0].get(k) for k in ("peak_vmhwm_mib", "temporary_peak_bytes", "output_bytes",
                                                           "cosine_to_whole_scene")}}
                       for name, rs in runs.items()}
            sys.path.insert(0, str(_common.BENCH))
            import bench_memory

            by_size = []
            for size in (int(s) for s in args.sizes.split(",")):
                bench_memory.ensure_data(size, args.timeout)
                by_size.append(run_section(["--child", "iamap", "--size", str(size)], args.timeout))
            results["iamap"] = {"scene_summary": summary, "scene_runs": runs, "iamap_style_by_size": by_size}
        else:
            results[section] = run_section(["--child", section, *extra], args.timeout)
        print(f"{section}: {time.perf_counter() - start:.0f} s\n{json.dumps(results[section], indent=1)}",
              flush=True)
        _common.write_json(args.out, results)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
