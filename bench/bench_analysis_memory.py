"""Peak memory of the feature-space analysis steps against raster size, on generated feature rasters.

Inputs: float32 "feature rasters" of N×N pixels and B bands (default 32), tiled 256² and DEFLATE-compressed, with a
nodata (NaN) border, written block row by block row in a child process (smooth patterns per band plus noise, so
that clustering has structure). They are cached in ``bench/data/`` (git-ignored).

Workloads, each in a FRESH child process (``tiling.pixelwise`` + ``models``, exactly what the algorithms run):

* ``reduce``: sample 20 000 valid pixels, fit PCA (3 components, standardised), transform every pixel → float32;
* ``cluster``: sample 20 000 valid pixels, fit k-means (8 clusters), label every pixel → uint8 with colour table;
* ``whole_array`` (reference, small sizes only): what IAMAP's analysis tools do — read the whole raster into
  memory, then fit and transform PCA on all of it.

Memory, in MiB: ``rss_after_imports`` (the child's baseline: Python, GDAL, numpy, scikit-learn and the plugin
imported), ``peak_vmhwm`` (the child's peak resident set, read by
itself), ``peak_ru_maxrss`` (the same seen by the parent through ``os.wait4``) and ``increment`` = peak − baseline.
Target: the streamed workloads' increment stays flat (within 64 MiB) once the raster is wider than one input window
(the window budget is 64 MiB of input: 256 rows × ~1000 columns at 32 bands), while the raster grows 16 × in pixels.

Run: ``.venv/bin/python bench/bench_analysis_memory.py [--sizes 1024,4096] [--bands 32] [--out ...]``.
Results: ``bench/results/analysis_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _common

BLOCK = 256
SAMPLE = 20000


def data_path(size: int, bands: int) -> Path:
    return _common.DATA / f"features_{bands}b_float32_{size}.tif"


# --------------------------------------------------------------------------------------------------- children
def generate(size: int, bands: int, path: Path, seed: int = 0) -> None:
    """Write the N×N×B float32 raster one block row at a time (bounded memory)."""
    import numpy as np
    from osgeo import gdal, osr

    gdal.UseExceptions()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    options = ["TILED=YES", f"BLOCKXSIZE={BLOCK}", f"BLOCKYSIZE={BLOCK}", "COMPRESS=DEFLATE", "PREDICTOR=3",
               "BIGTIFF=YES", "NUM_THREADS=ALL_CPUS"]
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp), size, size, bands, gdal.GDT_Float32, options)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    ds.SetGeoTransform((500000.0, 10.0, 0.0, 6000000.0, 0.0, -10.0))
    for b in range(bands):
        ds.GetRasterBand(b + 1).SetNoDataValue(float("nan"))
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.5, 3.0, (bands, 2)) * 2 * np.pi / size
    phase = rng.uniform(0, 2 * np.pi, bands)
    x = np.arange(size, dtype=np.float32)
    border = max(size // 64, 1)
    for y0 in range(0, size, BLOCK):
        rows = min(BLOCK, size - y0)
        y = np.arange(y0, y0 + rows, dtype=np.float32)[:, None]
        strip = np.empty((bands, rows, size), np.float32)
        for b in range(bands):
            strip[b] = (np.sin(x[None, :] * freq[b, 0] + phase[b]) * np.cos(y * freq[b, 1])
                        + rng.standard_normal((rows, size), dtype=np.float32) * 0.05)
        strip[:, :, :border] = np.nan
        ds.WriteArray(strip, 0, y0)
        ds.FlushCache()
    ds = None
    tmp.replace(path)


def work(workload: str, path: str, out_dir: str) -> dict:
    """Run one workload and report its memory from inside (VmHWM) and its time."""
    t0 = time.perf_counter()
    import numpy as np  # noqa: F401 (imports are part of the baseline)
    from osgeo import gdal

    _common.ensure_plugin_path()
    from deepraster.analysis.clustering import fit_clusterer
    from deepraster.analysis.estimators import REDUCTION, make_estimator
    from deepraster.analysis.reduction import fit_reducer
    from deepraster.tiling.pixel_sampling import sample_valid_pixels
    from deepraster.tiling.pixelwise import map_pixels
    from deepraster.tiling.source import RasterSource
    from sklearn import cluster, decomposition, neighbors, pipeline, preprocessing  # noqa: F401 (baseline)

    import_s = time.perf_counter() - t0
    baseline = _common.proc_status_kib("VmRSS")
    source = RasterSource.open(path)
    bands = list(range(1, source.band_count + 1))
    names = tuple(f"f{b}" for b in bands)
    t1 = time.perf_counter()
    if workload == "whole_array":  # IAMAP's approach: everything in memory
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler

        data = gdal.Open(path).ReadAsArray()
        pixels = data.reshape(len(bands), -1).T
        pixels = pixels[np.isfinite(pixels).all(axis=1)]
        scaled = StandardScaler().fit_transform(pixels)
        result = PCA(3).fit(scaled[::max(len(scaled) // SAMPLE, 1)]).transform(scaled)
        valid = len(result)
    else:
        sample = sample_valid_pixels(source, bands, SAMPLE, seed=0)
        if workload == "reduce":
            built = make_estimator(REDUCTION, "PCA", None, seed=0, size=(3, ("n_components",)))
            fitted = fit_reducer(sample.values, built, names)
        else:
            built = make_estimator("cluster", "KMeans", None, seed=0, size=(8, ("n_clusters",)))
            fitted = fit_clusterer(sample.values, built, names)
        out = str(Path(out_dir) / f"{workload}.tif")
        stats = map_pixels(source, bands, fitted.pixel_function(), [fitted.main_output(out)])
        valid = stats.valid_pixels
        Path(out).unlink()
    return {"workload": workload, "import_s": round(import_s, 2), "run_s": round(time.perf_counter() - t1, 2),
            "valid_pixels": int(valid), "rss_after_imports_mib": _common.mib(baseline),
            "peak_vmhwm_mib": _common.mib(_common.proc_status_kib("VmHWM"))}


# --------------------------------------------------------------------------------------------------- parent
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1024,4096")
    parser.add_argument("--bands", type=int, default=32)
    parser.add_argument("--whole-array-max", type=int, default=2048, help="largest size for the whole_array run")
    parser.add_argument("--out", default=str(_common.RESULTS / "analysis_memory.json"))
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child[0] == "generate":
            generate(int(args.child[1]), int(args.child[2]), Path(args.child[3]))
        else:
            print(json.dumps(work(*args.child)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    script = str(Path(__file__).resolve())
    results = {"benchmark": "analysis_memory", "machine": _common.machine_info(), "bands": args.bands,
               "sample": SAMPLE, "data": {}, "runs": []}
    out_dir = _common.DATA / "analysis_tmp"
    out_dir.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        path = data_path(size, args.bands)
        cached = path.exists()
        if not cached:
            gen = _common.run_child([str(_common.PYTHON), script, "--child", "generate", str(size), str(args.bands),
                                     str(path)])
            if gen.returncode:
                sys.exit(f"generation failed: {gen.stderr}")
            results["data"][size] = {"generate_s": round(gen.wall_s, 1), "generate_peak_mib": _common.mib(
                gen.maxrss_kib)}
        results["data"].setdefault(size, {}).update(
            {"path": str(path), "cached": cached, "bytes_on_disk": path.stat().st_size,
             "bytes_uncompressed": size * size * args.bands * 4})
        workloads = ["reduce", "cluster"] + (["whole_array"] if size <= args.whole_array_max else [])
        for workload in workloads:
            child = _common.run_child([str(_common.PYTHON), script, "--child", workload, str(path), str(out_dir)])
            report = child.last_json()
            if child.returncode or report is None:
                sys.exit(f"{workload} at {size} failed: {child.stderr[-2000:]}")
            report.update({"size": size, "mpx": round(size * size / 1e6, 2), "wall_s": round(child.wall_s, 2),
                           "peak_ru_maxrss_mib": _common.mib(child.maxrss_kib),
                           "increment_mib": round(report["peak_vmhwm_mib"] - report["rss_after_imports_mib"], 1)})
            results["runs"].append(report)
            print(f"{size:>6}² × {args.bands} bands  {workload:12s} peak {report['peak_vmhwm_mib']:7.1f} MiB "
                  f"(+{report['increment_mib']:6.1f} over imports)  {report['run_s']:6.1f} s", flush=True)
    streamed = [r for r in results["runs"] if r["workload"] != "whole_array"]
    for workload in ("reduce", "cluster"):
        rows = [r for r in streamed if r["workload"] == workload]
        if len(rows) > 1:
            results[f"{workload}_increment_growth_mib"] = round(rows[-1]["increment_mib"] - rows[0]["increment_mib"], 1)
    _common.write_json(Path(args.out), results)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
