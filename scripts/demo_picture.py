"""Draw the demo picture (true-colour image beside the class raster, with a legend) and print class fractions.

Usage: demo_picture.py SCENE.tif CLASSES.tif OUT.png
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from osgeo import gdal  # noqa: E402

gdal.UseExceptions()


def band_by_description(ds: gdal.Dataset, name: str) -> np.ndarray:
    """The band whose description is ``name`` (e.g. "B04"), as float32."""
    for i in range(1, ds.RasterCount + 1):
        if ds.GetRasterBand(i).GetDescription() == name:
            return ds.GetRasterBand(i).ReadAsArray().astype(np.float32)
    raise SystemExit(f"no band described {name!r} in the scene")


def true_colour(scene: gdal.Dataset) -> np.ndarray:
    """B04/B03/B02 reflectance stretched to the 2–98 % percentiles, (rows, cols, 3) in 0–1."""
    rgb = np.dstack([band_by_description(scene, b) for b in ("B04", "B03", "B02")])
    low, high = np.percentile(rgb, (2, 98))
    return np.clip((rgb - low) / (high - low), 0, 1)


def main(scene_path: str, classes_path: str, out_png: str) -> None:
    scene, classes_ds = gdal.Open(scene_path), gdal.Open(classes_path)
    band = classes_ds.GetRasterBand(1)
    classes = band.ReadAsArray()
    table = band.GetColorTable()
    names = gdal.Info(classes_ds, format="json")["bands"][0].get("categories") or []
    values = [v for v in range(len(names)) if names[v]]
    colours = [np.array(table.GetColorEntry(v)[:3]) / 255 for v in values]
    counts = np.bincount(classes.ravel(), minlength=256)
    valid = counts[:255].sum()
    print("class fractions (of valid pixels):")
    for v in values:
        print(f"  {v} {names[v]:<13} {counts[v] / valid:7.2%}")
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), dpi=110)
    axes[0].imshow(true_colour(scene), interpolation="nearest")
    axes[0].set_title("Sentinel-2 L1C, 16 Feb 2017, true colour (B04, B03, B02)")
    lut = np.zeros((256, 3))
    for v, c in zip(values, colours, strict=True):
        lut[v] = c
    axes[1].imshow(lut[classes], interpolation="nearest")
    axes[1].set_title("Deep Raster \"Classify pixels\": ukis-csmask 6-band U-Net")
    axes[1].legend(handles=[Patch(facecolor=c, edgecolor="black", label=f"{names[v]} {counts[v] / valid:.1%}")
                            for v, c in zip(values, colours, strict=True)],
                   loc="lower right", fontsize=8, framealpha=0.9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out_png)
    print(f"picture: {out_png}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
