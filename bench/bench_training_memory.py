"""Training memory against the number of chips: peak memory must not grow with N (chips are read from disk).

For each N (default 200, 800 and 3200) a child process writes a chip folder in Deep Raster's layout: N pairs of
32 px chips (4 × uint16 image, uint8 label with two classes), every fifth chip a validation chip, and a
``manifest.json`` with statistics and pixel counts. A fresh child then runs ``training.train.train_segmentation``
(U-Net / resnet18, batch 16, one epoch, CPU, seed 0) on it and reports its resident memory after the imports
(``VmRSS``), its peak (``VmHWM``) and the epoch's seconds; the parent also reads the child's ``ru_maxrss`` (which
includes the interpreter's exit, see ``_common``).

Run: ``.venv/bin/python bench/bench_training_memory.py [--chips 200 800 3200] [--threads 2]
[--out bench/results/training_memory.json]``.
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

CHIP = 32
BANDS = ("B02", "B03", "B04", "B08")
GEOTRANSFORM = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)


def child_generate(n: int, folder: Path) -> dict[str, Any]:
    """``n`` chip pairs and a manifest in ``folder`` (class 1 where the NIR band is low, else class 0)."""
    import numpy as np
    from osgeo import gdal

    rng = np.random.default_rng(0)
    driver = gdal.GetDriverByName("GTiff")
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True)
    chips, counts = [], {"train": [0, 0], "validation": [0, 0]}
    s1, s2, pixels = np.zeros(len(BANDS)), np.zeros(len(BANDS)), 0
    for i in range(n):
        water = rng.random((CHIP, CHIP)) < rng.random()
        image = rng.integers(800, 1200, (len(BANDS), CHIP, CHIP)).astype(np.uint16)
        image[3] = np.where(water, rng.integers(100, 400, (CHIP, CHIP)), image[3] + 1500)
        split = "validation" if i % 5 == 4 else "train"
        name = f"{i:09d}.tif"
        for sub, data, dtype in (("images", image, gdal.GDT_UInt16), ("labels", water[None].astype(np.uint8),
                                                                        gdal.GDT_Byte)):
            ds = driver.Create(str(folder / sub / name), CHIP, CHIP, len(data), dtype, ["COMPRESS=DEFLATE"])
            ds.SetGeoTransform((GEOTRANSFORM[0] + i * CHIP * 10, 10.0, 0.0, GEOTRANSFORM[3], 0.0, -10.0))
            for b, band in enumerate(data):
                ds.GetRasterBand(b + 1).WriteArray(band)
            ds = None
        counts[split][0] += int((~water).sum())
        counts[split][1] += int(water.sum())
        if split == "train":
            flat = image.reshape(len(BANDS), -1).astype(np.float64)
            s1, s2, pixels = s1 + flat.sum(axis=1), s2 + (flat ** 2).sum(axis=1), pixels + flat.shape[1]
        chips.append({"image": f"images/{name}", "label": f"labels/{name}", "split": split,
                      "window": [i * CHIP, 0, CHIP, CHIP]})
    mean = s1 / pixels
    manifest = {"format": "deepraster-training-chips", "format_version": 1,
                "bands": [{"index": i + 1, "source_band": i + 1, "description": b, "nodata": None}
                          for i, b in enumerate(BANDS)],
                "classes": [{"value": 0, "name": "land", "color": "#228b22"},
                            {"value": 1, "name": "water", "color": "#1e90ff"}],
                "ignore_value": 255, "chip_size": CHIP,
                "statistics": {"mean": mean.tolist(), "std": np.sqrt(s2 / pixels - mean ** 2).tolist()},
                "pixel_counts": {s: {"0": c[0], "1": c[1]} for s, c in counts.items()}, "chips": chips}
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return {"chips": n}


def child_train(folder: Path, threads: int) -> dict[str, Any]:
    import torch
    from deepraster.tiling.callbacks import Callbacks
    from deepraster.training.train import TrainRequest, train_segmentation

    torch.set_num_threads(threads)
    rss_start = _common.proc_status_kib("VmRSS")
    start = time.perf_counter()
    result = train_segmentation(TrainRequest(chips=folder, output=folder.parent / f"{folder.name}.drpk", epochs=1,
                                             batch_size=16, device="cpu", seed=0, patience=0),
                                Callbacks())
    return {"wall_s": round(time.perf_counter() - start, 2), "epoch_s": round(result.history[0]["seconds"], 2),
            "rss_after_imports_mib": _common.mib(rss_start)}


def measure(n: int, work: Path, threads: int) -> dict[str, Any]:
    folder = work / f"n{n}"
    script = Path(__file__).resolve()
    generated = _common.run_child([str(_common.PYTHON), str(script), "--child", "generate", "--n", str(n),
                                   "--folder", str(folder)])
    trained = _common.run_child([str(_common.PYTHON), str(script), "--child", "train", "--folder", str(folder),
                                 "--threads", str(threads)])
    report = trained.last_json()
    if generated.returncode or trained.returncode or report is None:
        raise SystemExit(f"{n} chips: child failed\n{generated.stderr[-2000:]}\n{trained.stderr[-2000:]}")
    shutil.rmtree(folder)
    return {"chips": n, "train_chips": n - n // 5, "validation_chips": n // 5, **report,
            "vmhwm_minus_after_imports_mib": round(report["vmhwm_mib"] - report["rss_after_imports_mib"], 1),
            "maxrss_mib": _common.mib(trained.maxrss_kib), "load_1min": _common.load_average()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chips", type=int, nargs="+", default=[200, 800, 3200])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=_common.RESULTS / "training_memory.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _common.ensure_plugin_path()
        result = child_generate(args.n, args.folder) if args.child == "generate" \
            else child_train(args.folder, args.threads)
        result["vmhwm_mib"] = _common.mib(_common.proc_status_kib("VmHWM"))
        print(json.dumps(result))
        return
    runs = []
    with tempfile.TemporaryDirectory(prefix="deepraster-bench-training-memory-") as work:
        for n in args.chips:
            runs.append(measure(n, Path(work), args.threads))
            print(json.dumps(runs[-1]), file=sys.stderr)
    peaks = [r["vmhwm_mib"] for r in runs]
    data = {"machine": _common.machine_info(), "chip_px": CHIP, "bands": len(BANDS), "network": "Unet / resnet18",
            "batch_size": 16, "epochs": 1, "threads": args.threads, "runs": runs,
            "peak_growth_mib": round(peaks[-1] - peaks[0], 1),
            "peak_ratio_largest_to_smallest": round(peaks[-1] / peaks[0], 3) if peaks[0] else None}
    _common.write_json(args.out, data)
    print(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
