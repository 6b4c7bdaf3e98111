"""Fidelity of the ukis-csmask packages against the model authors' own pipeline (``ukis_csmask.mask.CSmask``).

For each scene (the 10 m and 30 m Sentinel-2 L1C stacks) and package (4 bands B02, B03, B04, B08, and 6 bands
+ B11, B12; Level-1C) it runs the plugin's pipeline at the training tile (256 px) with several overlaps and edge
margins (tiles reaching past the raster edges, reflection-padded), optionally with test-time augmentation and at
other tile sizes, and reports class fractions (clear / cloud / shadow) and the
pixel agreement with CSmask (onnxruntime, 256 px tiles, 20 % overlap). The bar for agreement is CSmask's agreement
with itself when its tile grid is shifted by half a tile (the input reflect-padded by 128 px at the top and left,
the result cropped back): tiling alone moves that many pixels in the authors' own pipeline.

Not a test: results go to ``bench/results/fidelity.json`` (gitignored). Example::

    .venv/bin/python bench/bench_fidelity.py --overlaps 32 64 96 128 --margins 0 32 --tta-overlaps 64
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import numpy as np

_common.ensure_plugin_path()

from deepraster.models.package import load_package  # noqa: E402
from deepraster.models.pixel_classification import ClassifyRequest, classify_raster  # noqa: E402
from osgeo import gdal  # noqa: E402

ROOT = _common.ROOT
SCENES = {"10m": ROOT / ".data/s2/s2_l1c_10m.tif", "30m": ROOT / ".data/s2/s2_l1c_30m.tif"}
PACKAGES = {"4b": ROOT / ".data/models/ukis-csmask-4b-l1c", "6b": ROOT / ".data/models/ukis-csmask-6b-l1c"}
UKIS_ORDER = {"4b": ["blue", "green", "red", "nir"], "6b": ["blue", "green", "red", "nir", "swir16", "swir22"]}
S2_NAMES = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "swir16": "B11", "swir22": "B12"}
SHIFT = 128  # half of CSmask's 256 px tile


def reflectance(scene: Path, bands: str) -> np.ndarray:
    """(rows, cols, bands) TOA reflectance in CSmask's band order, found by the raster's band descriptions."""
    ds = gdal.Open(str(scene))
    names = [ds.GetRasterBand(i + 1).GetDescription() for i in range(ds.RasterCount)]
    raw = ds.ReadAsArray()
    return np.stack([raw[names.index(S2_NAMES[b])] for b in UKIS_ORDER[bands]], axis=-1).astype(np.float32) / 1e4


def csmask(img: np.ndarray, bands: str) -> np.ndarray:
    from ukis_csmask.mask import CSmask

    return CSmask(img, band_order=UKIS_ORDER[bands], product_level="l1c",
                  providers=["CPUExecutionProvider"]).csm[..., 0].astype(np.uint8)


def csmask_shifted(img: np.ndarray, bands: str) -> np.ndarray:
    """CSmask with its grid shifted by half a tile: reflect-pad top/left by SHIFT px, crop the result back."""
    padded = np.pad(img, ((SHIFT, 0), (SHIFT, 0), (0, 0)), mode="reflect")
    return csmask(padded, bands)[SHIFT:, SHIFT:]


def fractions(classes: np.ndarray) -> list[float]:
    counts = np.bincount(classes.ravel(), minlength=3)[:3]
    return [round(100 * float(c) / classes.size, 2) for c in counts]


def ours(scene: Path, package: Path, tmp: Path, **kwargs: Any) -> tuple[np.ndarray, float]:
    path = tmp / "classes.tif"
    request = ClassifyRequest(raster=str(scene), package=load_package(package), classes_path=str(path),
                              device="auto", **kwargs)
    start = time.perf_counter()
    classify_raster(request)
    seconds = time.perf_counter() - start
    return gdal.Open(str(path)).ReadAsArray(), seconds


def compare(a: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    fa, fr = fractions(a), fractions(ref)
    return {"fractions": fa, "agreement": round(100 * float((a == ref).mean()), 2),
            "max_fraction_diff": round(max(abs(x - y) for x, y in zip(fa, fr, strict=True)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES))
    parser.add_argument("--packages", nargs="+", default=list(PACKAGES), choices=list(PACKAGES))
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlaps", nargs="+", type=int, default=[32, 64, 96, 128])
    parser.add_argument("--margins", nargs="+", type=int, default=[0], help="edge margins (px) tried")
    parser.add_argument("--tta-overlaps", nargs="*", type=int, default=[], help="overlaps also run with TTA")
    parser.add_argument("--extra", nargs="*", default=[], help="other tilings TILE/OVERLAP[/MARGIN], e.g. 640/384")
    parser.add_argument("--out", type=Path, default=_common.RESULTS / "fidelity.json")
    args = parser.parse_args()

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for scene in args.scenes:
            for bands in args.packages:
                img = reflectance(SCENES[scene], bands)
                ref = csmask(img, bands)
                shifted = csmask_shifted(img, bands)
                base = {"scene": scene, "package": bands}
                results.append({**base, "run": "CSmask", "fractions": fractions(ref)})
                results.append({**base, "run": f"CSmask shifted {SHIFT} px", **compare(shifted, ref)})
                print(results[-2], results[-1], flush=True)
                runs = [(args.tile, o, m, False) for o in args.overlaps for m in args.margins]
                runs += [(args.tile, o, m, True) for o in args.tta_overlaps for m in args.margins]
                runs += [(*(int(v) for v in (e + "/0").split("/")[:3]), False) for e in args.extra]
                for tile, overlap, margin, tta in runs:
                    classes, seconds = ours(SCENES[scene], PACKAGES[bands], tmp, tile_size=tile, overlap=overlap,
                                            edge_margin=margin, tta=tta)
                    row = {**base, "run": f"{tile}/{overlap} margin {margin}{' TTA' if tta else ''}", "tile": tile,
                           "overlap": overlap, "edge_margin": margin, "tta": tta, **compare(classes, ref),
                           "seconds": round(seconds, 1)}
                    results.append(row)
                    print(row, flush=True)
    _common.write_json(args.out, {"shift_px": SHIFT, "results": results})
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
