"""IAMAP's encoder loop (its encoder.py), re-implemented with GDAL for the feature benchmark: the reference "peer"
that bench_features.py measures ours against. rasterio is not in this environment; GDAL does the same reads and
writes. Sizes are pixels; scale multiplies the raw values before normalisation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import _common


def merge_first(paths: list[Path], target: Path) -> None:
    """``rasterio.merge.merge(paths, method="first")`` then a write, as IAMAP's ``merge_tiles`` does: the output
    (the union of the tiles' extents) is allocated whole in memory, each tile is copied where no earlier tile wrote."""
    import numpy as np
    from osgeo import gdal

    infos = []
    for p in paths:
        ds = gdal.Open(str(p))
        infos.append((ds.GetGeoTransform(), ds.RasterXSize, ds.RasterYSize, ds.RasterCount, ds.GetProjection()))
    gt0 = infos[0][0]
    xmin = min(g[0] for g, *_ in infos)
    ymax = max(g[3] for g, *_ in infos)
    xmax = max(g[0] + w * g[1] for g, w, *_ in infos)
    ymin = min(g[3] + h * g[5] for g, _, h, *_ in infos)
    width, height = round((xmax - xmin) / gt0[1]), round((ymin - ymax) / gt0[5])
    dest = np.zeros((infos[0][3], height, width), np.float32)
    filled = np.zeros((height, width), bool)
    for p, (g, w, h, _, _) in zip(paths, infos, strict=True):
        c, r = round((g[0] - xmin) / gt0[1]), round((g[3] - ymax) / gt0[5])
        data = gdal.Open(str(p)).ReadAsArray().reshape(-1, h, w)
        free = ~filled[r:r + h, c:c + w]
        dest[:, r:r + h, c:c + w][:, free] = data[:, free]
        filled[r:r + h, c:c + w] = True
    out = gdal.GetDriverByName("GTiff").Create(str(target), width, height, dest.shape[0], gdal.GDT_Float32)
    out.SetGeoTransform((xmin, gt0[1], 0.0, ymax, 0.0, gt0[5]))
    out.SetProjection(infos[0][4])
    out.WriteArray(dest)
    out = None



def iamap_style_run(module, raster: Path, bands: list[int], scale: float, mean, std, tmp: Path,
                    merged: Path) -> tuple[Path, dict[str, Any]]:
    """Encode ``raster`` tile by tile as IAMAP does (256 px tiles every 192 px, batch 1, the raster reopened for
    every tile, one GeoTIFF per tile, a merge every 500 tiles, a final "first" merge into ``merged``); the
    temporary folder ``tmp`` is removed at the end. Returns ``merged`` and the timings."""
    import numpy as np
    import torch
    from deepraster.tiling.grid import axis_starts
    from osgeo import gdal

    tile, step = 256, 192
    src = gdal.Open(str(raster))
    width, height, gt, wkt = src.RasterXSize, src.RasterYSize, src.GetGeoTransform(), src.GetProjection()
    src = None
    rows, cols = axis_starts(0, height, tile, step), axis_starts(0, width, tile, step)
    tmp.mkdir(exist_ok=True)
    merged_tmp = tmp / "merged_tmp.tif"
    rss = _common.proc_status_kib("VmRSS")
    start = time.perf_counter()
    tiles: list[Path] = []
    peak_disk, done, merges = 0, 0, 0
    for r in rows:
        for c in cols:
            ds = gdal.Open(str(raster))
            x = ds.ReadAsArray(c, r, tile, tile, band_list=bands).astype(np.float32) * scale
            ds = None
            with torch.inference_mode():
                feat = module(torch.from_numpy(((x - mean) / std)[None]))[0].numpy()
            path = tmp / f"{done}_tmp.tif"
            out = gdal.GetDriverByName("GTiff").Create(str(path), feat.shape[2], feat.shape[1], feat.shape[0],
                                                       gdal.GDT_Float32)
            out.SetGeoTransform((gt[0] + c * gt[1], gt[1] * tile / feat.shape[2], 0.0, gt[3] + r * gt[5], 0.0,
                                 gt[5] * tile / feat.shape[1]))
            out.SetProjection(wkt)
            out.WriteArray(feat)
            out = None
            tiles.append(path)
            done += 1
            peak_disk = max(peak_disk, sum(p.stat().st_size for p in tmp.iterdir()))
            if done % 500 == 0:  # periodic cleanup: merge everything so far, delete the tiles
                sources = ([merged_tmp] if merged_tmp.exists() else []) + tiles
                merge_first(sources, tmp / "merged_new.tif")
                peak_disk = max(peak_disk, sum(p.stat().st_size for p in tmp.iterdir()))
                for p in tiles:
                    p.unlink()
                (tmp / "merged_new.tif").replace(merged_tmp)
                tiles, merges = [], merges + 1
    merge_first(([merged_tmp] if merged_tmp.exists() else []) + tiles, merged)
    peak_disk = max(peak_disk, sum(p.stat().st_size for p in tmp.iterdir()) + merged.stat().st_size)
    wall = time.perf_counter() - start
    report = {"seconds": round(wall, 2), "peak_vmhwm_mib": _common.mib(_common.proc_status_kib("VmHWM")),
              "rss_before_mib": _common.mib(rss), "output_bytes": merged.stat().st_size,
              "temporary_peak_bytes": peak_disk, "tiles": done, "periodic_merges": merges}
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return merged, report
