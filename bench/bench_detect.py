"""Peak memory, speed and exactness of Detect objects against raster size, with many objects.

Inputs are generated 2-band uint8 GeoTIFFs (tiled 256², DEFLATE) of N×N pixels, written strip by strip: one bright
8 px square per cell of a ``SPACING`` px lattice, at a random place in its cell (so roughly (N / SPACING)² objects:
about 100 000 at 20000² px), cached in ``bench/data/``. The detector is the deterministic square detector of
``tests/detection_scene.py`` in package form (512 px tiles, 64 px overlap), so the reading, merging and writing
dominate.

Each size runs in a FRESH child (``--child``) that reports its ``VmHWM`` (peak resident set), its RSS after the
imports, the run's wall time, the most boxes the merger held at once, and the exactness: every square found once
with its exact box (the GeoPackage read back after the peak was taken). The parent also reads the child's
``ru_maxrss`` through ``os.wait4``.

GDAL's block cache (``GDAL_CACHEMAX``, 5 % of RAM by default) is set by ``--gdal-cache`` (MiB, default 64) in the
child: the run's pre-checks (``tiling.source.sample_pixels``, a decimated read of the whole raster) otherwise fill
it with the decoded blocks of the whole file for a moment (+514 MiB for the 20000² raster, measured alone), which
is GDAL's cache, not what the run holds; ``--gdal-cache 0`` keeps GDAL's default.

Run: ``.venv/bin/python bench/bench_detect.py [--sizes 2000,10000,20000]``; results in bench/results/detect.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import _common

SPACING = 63
SIZE = 8


def data_path(size: int) -> Path:
    return _common.DATA / f"squares_2b_uint8_{size}.tif"


def generate(path: Path, size: int) -> None:
    """The N×N raster, strip by strip (one lattice row of cells at a time); squares of random label and score."""
    import numpy as np
    from osgeo import gdal, osr

    gdal.UseExceptions()
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".partial.tif")
    ds = gdal.GetDriverByName("GTiff").Create(str(temp), size, size, 2, gdal.GDT_Byte,
                                              ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"])
    ds.SetGeoTransform((500000.0, 0.5, 0.0, 5800000.0, 0.0, -0.5))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    for band, name in zip((1, 2), ("value", "score"), strict=True):
        ds.GetRasterBand(band).SetDescription(name)
    rng = np.random.default_rng(0)
    cells = size // SPACING
    for row in range(cells + 1):
        top = row * SPACING
        height = min(SPACING, size - top)
        if height <= 0:
            break
        strip = np.zeros((2, height, size), np.uint8)
        if row < cells:
            dx = rng.integers(2, SPACING - SIZE - 2, cells)
            dy = rng.integers(2, SPACING - SIZE - 2, cells)
            label = rng.integers(1, 3, cells)
            score = rng.integers(30, 100, cells)
            for c in range(cells):
                x, y = c * SPACING + dx[c], dy[c]
                strip[0, y:y + SIZE, x:x + SIZE] = 100 * label[c]
                strip[1, y:y + SIZE, x:x + SIZE] = score[c]
        ds.WriteRaster(0, top, size, height, strip.tobytes(), band_list=[1, 2])
    ds = None
    temp.rename(path)


def child(size: int, out: Path) -> None:
    """One measured run (in a fresh process); prints one JSON line."""
    _common.ensure_plugin_path()
    sys.path.insert(0, str(_common.ROOT / "tests"))
    import json

    from deepraster.models.sources import open_model
    from deepraster.objects.detection import DetectRequest, detect_objects
    from detection_scene import detection_package

    package = open_model(detection_package(out.parent / "package", tile=512, overlap=64))
    rss_imports = _common.proc_status_kib("VmRSS")
    start = time.perf_counter()
    stats = detect_objects(DetectRequest(str(data_path(size)), package, str(out), confidence=0.0, device="cpu",
                                         batch_size=4))
    seconds = time.perf_counter() - start
    peak = _common.proc_status_kib("VmHWM")
    cells = size // SPACING
    print(json.dumps({"size": size, "objects": cells * cells, "boxes": stats.boxes, "exact": exact(out, cells),
                      "seconds": round(seconds, 1), "tiles": stats.tiles_predicted,
                      "boxes_held_max": stats.boxes_held_max, "rss_after_imports_mib": _common.mib(rss_imports),
                      "peak_vmhwm_mib": _common.mib(peak)}))


def exact(path: Path, cells: int) -> bool:
    """Every lattice cell holds exactly one box, SIZE px square on whole pixels (read back after the peak)."""
    import numpy as np
    from osgeo import ogr

    ds = ogr.Open(str(path))
    seen = np.zeros((cells, cells), np.int32)
    for feature in ds.GetLayer(0):
        minx, maxx, miny, maxy = feature.GetGeometryRef().GetEnvelope()
        x1, x2, y1, y2 = (minx - 500000.0) / 0.5, (maxx - 500000.0) / 0.5, (5800000.0 - maxy) / 0.5, \
            (5800000.0 - miny) / 0.5
        if abs(x2 - x1 - SIZE) > 1e-6 or abs(y2 - y1 - SIZE) > 1e-6 or x1 != round(x1) or y1 != round(y1):
            return False
        seen[int(y1) // SPACING, int(x1) // SPACING] += 1
    return bool((seen == 1).all())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,10000,20000")
    parser.add_argument("--gdal-cache", type=int, default=64)
    parser.add_argument("--child", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.out)
        return
    import tempfile

    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        gen = _common.run_child([str(_common.PYTHON), "-c", f"import sys; sys.path.insert(0, {str(_common.BENCH)!r}); "
                                 f"import bench_detect, pathlib; bench_detect.generate("
                                 f"bench_detect.data_path({size}), {size})"])
        if gen.returncode:
            raise SystemExit(gen.stderr[-2000:])
        if args.gdal_cache:
            os.environ["GDAL_CACHEMAX"] = str(args.gdal_cache)  # children inherit it
        with tempfile.TemporaryDirectory() as folder:
            run = _common.run_child([str(_common.PYTHON), __file__, "--child", str(size), "--out",
                                     str(Path(folder) / "boxes.gpkg")])
        report = run.last_json()
        if report is None:
            raise SystemExit(run.stderr[-3000:])
        report["peak_ru_maxrss_mib"] = _common.mib(run.maxrss_kib)
        report["gdal_cachemax_mib"] = args.gdal_cache or "default"
        print(report, flush=True)
        results.append(report)
    _common.write_json(_common.RESULTS / "detect.json", {"machine": _common.machine_info(), "runs": results})


if __name__ == "__main__":
    main()
