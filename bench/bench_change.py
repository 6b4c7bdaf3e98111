"""Runtime and peak memory of Detect change (``analysis.change``) against raster size, on generated rasters.

Inputs (cached in ``bench/data/``, git-ignored): two float32 "feature rasters" of N×N pixels and B bands (default
8; smooth patterns, the second with a changed square) and two uint8 class rasters (4 classes, the second with a
changed square), tiled 256² and DEFLATE-compressed. Each workload runs in a FRESH child process: ``feature`` (Otsu
threshold: histogram pass, then score + mask) and ``classes`` (pair counting, then the change raster and tables).
Memory in MiB: the child's peak resident set (VmHWM) and its increment over the baseline after imports.

Run: ``.venv/bin/python bench/bench_change.py [--sizes 1024,4096] [--bands 8]``. Results:
``bench/results/change.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _common
import numpy as np


def _write(path: Path, size: int, bands: int, dtype, fill) -> Path:
    from osgeo import gdal, osr

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    gdal_type = gdal.GDT_Float32 if dtype == np.float32 else gdal.GDT_Byte
    tmp = path.with_suffix(".part.tif")
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp), size, size, bands, gdal_type,
                                              ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=YES"])
    ds.SetGeoTransform((500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    for row in range(0, size, 256):
        rows = min(256, size - row)
        yy, xx = np.mgrid[row:row + rows, 0:size].astype(np.float32)
        block = fill(yy, xx)
        for b in range(bands):
            ds.GetRasterBand(b + 1).WriteArray(block[b % len(block)].astype(dtype), 0, row)
    ds = None
    tmp.rename(path)
    return path


def inputs(size: int, bands: int) -> dict[str, Path]:
    square = (slice(size // 4, size // 2), slice(size // 4, size // 2))

    def features(changed: bool):
        def fill(yy, xx):
            out = np.stack([1000 + 500 * np.sin(xx * (0.01 + 0.003 * b) + b) * np.cos(yy * 0.02) for b in range(4)])
            if changed:
                inside = (yy >= square[0].start) & (yy < square[0].stop) & (xx >= square[1].start) & \
                         (xx < square[1].stop)
                out[:, inside] = out[::-1][:, inside]
            return out
        return fill

    def classes(changed: bool):
        def fill(yy, xx):
            out = ((xx // 97 + yy // 89) % 4)[None]
            if changed:
                out = np.where((yy >= square[0].start) & (yy < square[0].stop) & (xx < size // 2), (out + 1) % 4, out)
            return out
        return fill

    d = _common.DATA
    return {"f1": _write(d / f"change_f1_{bands}b_{size}.tif", size, bands, np.float32, features(False)),
            "f2": _write(d / f"change_f2_{bands}b_{size}.tif", size, bands, np.float32, features(True)),
            "c1": _write(d / f"change_c1_{size}.tif", size, 1, np.uint8, classes(False)),
            "c2": _write(d / f"change_c2_{size}.tif", size, 1, np.uint8, classes(True))}


def child(workload: str, a: str, b: str, out: str) -> None:
    _common.ensure_plugin_path()
    from deepraster.analysis.change import class_change, feature_change

    base = _common.proc_status_kib("VmRSS")
    start = time.perf_counter()
    if workload == "feature":
        result = feature_change(a, b, f"{out}_mask.tif", f"{out}_score.tif")
        extra = {"threshold": result.threshold, "changed_percent": 100.0 * result.changed / result.compared}
    else:
        result = class_change(a, b, f"{out}_change.tif", f"{out}.csv")
        changed, total = result.table.totals()
        extra = {"changed_percent": 100.0 * changed / total}
    seconds = time.perf_counter() - start
    peak = _common.proc_status_kib("VmHWM")
    print(json.dumps({"seconds": seconds, "rss_after_imports": _common.mib(base), "peak_vmhwm": _common.mib(peak),
                      "increment": _common.mib(peak - base), **extra}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1024,4096")
    parser.add_argument("--bands", type=int, default=8)
    parser.add_argument("--child", nargs=4)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    import tempfile

    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        paths = inputs(size, args.bands)
        for workload, (a, b) in (("feature", ("f1", "f2")), ("classes", ("c1", "c2"))):
            with tempfile.TemporaryDirectory() as tmp:
                done = _common.run_child([str(_common.PYTHON), __file__, "--child", workload, str(paths[a]),
                                          str(paths[b]), str(Path(tmp) / "out")])
                row = {"size": size, "bands": args.bands if workload == "feature" else 1, "workload": workload,
                       **(done.last_json() or {"error": done.stderr[-2000:]})}
                print(row, flush=True)
                results.append(row)
    _common.write_json(_common.RESULTS / "change.json", {"results": results, "machine": _common.machine_info()})


if __name__ == "__main__":
    sys.exit(main())
