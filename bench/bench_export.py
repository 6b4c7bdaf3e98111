"""Export training data on generated rasters of growing size: peak memory must not grow with the raster.

For each side length (default 3000, 8000 and 20000 px) a child process writes a 4-band uint16 raster and a class
raster of the same grid (tiled, DEFLATE; smooth fields and blocky classes, written in row bands so generation stays
small), then a fresh child runs ``training.export.export_training_data`` (256 px chips, class-raster labels, spatial
blocks of 4 chips) and reports wall time, chips written and its peak RSS (VmHWM). GDAL's block cache is capped at
64 MiB in the export child (``GDAL_CACHEMAX``), as QGIS users can set it; the default (5 % of RAM) would dominate.

Run: ``.venv/bin/python bench/bench_export.py [--sizes 3000 8000 20000] [--out bench/results/export.json]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

CHIP = 256
PIXEL_M = 10.0
BLOCK_CHIPS = 4
ROWS_PER_WRITE = 512


def child_generate(size: int, folder: Path) -> dict[str, Any]:
    """``image.tif`` (4 × uint16) and ``labels.tif`` (uint8, 3 classes in 600 px blocks) of ``size``² px."""
    import numpy as np
    from osgeo import gdal, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    options = ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"]
    geotransform = (500000.0, PIXEL_M, 0.0, 5800000.0, 0.0, -PIXEL_M)
    outputs = {}
    for name, bands, dtype in (("image", 4, gdal.GDT_UInt16), ("labels", 1, gdal.GDT_Byte)):
        ds = gdal.GetDriverByName("GTiff").Create(str(folder / f"{name}.tif"), size, size, bands, dtype, options)
        ds.SetGeoTransform(geotransform)
        ds.SetProjection(srs.ExportToWkt())
        cols = np.arange(size)
        for top in range(0, size, ROWS_PER_WRITE):
            rows = np.arange(top, min(size, top + ROWS_PER_WRITE))[:, None]
            if name == "labels":
                ds.GetRasterBand(1).WriteArray(((rows // 600 + cols // 600) % 3).astype(np.uint8), 0, top)
                continue
            for b in range(bands):
                field = 1000 + 500 * np.sin(rows / (50 + 10 * b)) * np.cos(cols / 70) + 30 * b
                ds.GetRasterBand(b + 1).WriteArray(field.astype(np.uint16), 0, top)
        outputs[name] = str(folder / f"{name}.tif")
        ds = None
    return outputs


def child_export(folder: Path) -> dict[str, Any]:
    from deepraster.training.export import ExportRequest, export_training_data
    from osgeo import gdal

    gdal.SetCacheMax(64 * 2**20)
    start = time.perf_counter()
    result = export_training_data(ExportRequest(raster=str(folder / "image.tif"), output=str(folder / "chips"),
                                                label_raster=str(folder / "labels.tif"), chip_size=CHIP,
                                                block_size=BLOCK_CHIPS * CHIP * PIXEL_M))
    return {"wall_s": round(time.perf_counter() - start, 2), "chips": result.chips, "skipped": result.skipped}


def measure(size: int, work: Path) -> dict[str, Any]:
    folder = work / f"r{size}"
    folder.mkdir()
    script = Path(__file__).resolve()
    generated = _common.run_child([str(_common.PYTHON), str(script), "--child", "generate", "--size", str(size),
                                   "--folder", str(folder)])
    exported = _common.run_child([str(_common.PYTHON), str(script), "--child", "export", "--folder", str(folder)])
    report = exported.last_json()
    if generated.returncode or exported.returncode or report is None:
        raise SystemExit(f"size {size}: child failed\n{generated.stderr[-2000:]}\n{exported.stderr[-2000:]}")
    chips_mib = sum(p.stat().st_size for p in (folder / "chips").rglob("*") if p.is_file()) / 2**20
    shutil.rmtree(folder)  # the next size needs the disk space
    return {"side_px": size, "generate_s": round(generated.wall_s, 1), **report,
            "maxrss_mib": _common.mib(exported.maxrss_kib), "chips_mib": round(chips_mib, 1),
            "load_1min": round(_common.load_average(), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3000, 8000, 20000])
    parser.add_argument("--out", type=Path, default=_common.RESULTS / "export.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _common.ensure_plugin_path()
        result = child_generate(args.size, args.folder) if args.child == "generate" else child_export(args.folder)
        result["vmhwm_mib"] = _common.mib(_common.proc_status_kib("VmHWM"))
        print(json.dumps(result))
        return
    runs = []
    with tempfile.TemporaryDirectory(prefix="deepraster-bench-export-") as work:
        for size in args.sizes:
            runs.append(measure(size, Path(work)))
            print(json.dumps(runs[-1]), file=sys.stderr)
    peaks = [r["vmhwm_mib"] for r in runs]
    data = {"machine": _common.machine_info(), "chip_px": CHIP, "runs": runs,
            "peak_ratio_largest_to_smallest": round(peaks[-1] / peaks[0], 3) if peaks[0] else None}
    _common.write_json(args.out, data)
    print(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
