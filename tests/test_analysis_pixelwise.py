"""The per-pixel streaming core (tiling/pixelwise.py, analysis/vector_pixels.py), without QGIS: window-by-window
results equal whole-array results, nodata never reaches the function and comes out as nodata, sampling is uniform,
reproducible, independent of the windowing and bounded, values under points are exact."""

from __future__ import annotations

import numpy as np
import pytest
from deepraster.analysis.vector_pixels import polygon_pixels
from deepraster.tiling.callbacks import Callbacks
from deepraster.tiling.errors import RunCancelled
from deepraster.tiling.pixel_reader import PixelReader, plan_window_size
from deepraster.tiling.pixel_sampling import SampleSizeError, pixel_keys, sample_valid_pixels, values_at_points
from deepraster.tiling.pixelwise import PixelOutput, map_pixels
from deepraster.tiling.source import RasterSource
from deepraster.tiling.window import Window, map_to_pixel, pixel_centres
from helpers import smooth_field, write_blocked_raster, write_raster
from osgeo import gdal, ogr

ROWS, COLS = 301, 437
NODATA = 0


@pytest.fixture
def raster(tmp_path):
    """5 bands uint16, 32 px blocks (150 windows at a small budget), a nodata block and a nodata line."""
    data = smooth_field(5, ROWS, COLS, seed=3)
    data[:, 40:90, 100:180] = NODATA
    data[:, 200, :] = NODATA
    path = write_blocked_raster(tmp_path / "in.tif", data, block=32, nodata=NODATA,
                                descriptions=("B1", "B2", "B3", "B4", "B5"))
    return RasterSource.open(str(path)), data


def linear(pixels: np.ndarray) -> list[np.ndarray]:
    """Element-wise per-pixel function (exact in float32 whatever the batch): two outputs."""
    assert pixels.dtype == np.float32 and (pixels != NODATA).all()
    a = pixels[:, :1] * 2.0 - pixels[:, 2:3]
    cls = (pixels[:, 1] > pixels[:, 3]).astype(np.uint8)[:, None]
    return [np.hstack([a, pixels[:, 4:5]]), cls]


def outputs(folder) -> list[PixelOutput]:
    return [PixelOutput(str(folder / "f.tif"), 2, np.float32, float("nan"), ("a", "b")),
            PixelOutput(str(folder / "c.tif"), 1, np.uint8, 255, ("class",), {0: (0, 0, 0), 1: (255, 0, 0)},
                        ("zero", "one"))]


def test_window_plan():
    """Tiled inputs: whole blocks within the budget (never less than one); untiled: strips of rows."""
    rows, cols = plan_window_size(10000, 10000, (256, 256), 4, 2, 8 << 20)
    assert rows == 256 and cols % 256 == 0 and cols >= 256 and rows * cols * 4 * (2 + 8) <= 8 << 20
    assert plan_window_size(10000, 10000, (256, 256), 768, 4, 64 << 20) == (256, 256)  # over budget: one block
    rows, cols = plan_window_size(5000, 5000, (5000, 1), 10, 2, 8 << 20)  # strips of whole rows
    assert rows <= 256 and rows * cols * 10 * (2 + 8) <= 8 << 20


def test_windows_cover_region_once(raster):
    source, _ = raster
    region = Window(13, 7, 400, 250)
    with PixelReader(source, [1, 2], region, budget_bytes=40_000) as reader:
        cover = np.zeros((source.height, source.width), np.int32)
        for strip, windows in reader.strips():
            assert strip.col_off == region.col_off and strip.width == region.width
            for w in windows:
                assert w.row_off == strip.row_off and w.height == strip.height
                cover[w.slices()] += 1
                assert (w.col_off % 32 == 0 or w.col_off == region.col_off)  # aligned to the input's blocks
    expected = np.zeros_like(cover)
    expected[region.slices()] = 1
    np.testing.assert_array_equal(cover, expected)


def test_streamed_equals_whole_array(raster, tmp_path):
    """Many small windows, one big window, and numpy on the whole array give identical rasters."""
    source, data = raster
    small, big = tmp_path / "small", tmp_path / "big"
    small.mkdir()
    big.mkdir()
    s1 = map_pixels(source, [1, 2, 3, 4, 5], linear, outputs(small), budget_bytes=30_000)
    s2 = map_pixels(source, [1, 2, 3, 4, 5], linear, outputs(big), budget_bytes=1 << 30)
    assert s1.windows > 100 and s2.windows == 2  # 256 + 45 rows
    assert s1.valid_pixels == s2.valid_pixels == int((data[0] != NODATA).sum())
    valid = (data != NODATA).all(axis=0)
    x = data.astype(np.float32)
    for name in ("f.tif", "c.tif"):
        a = gdal.Open(str(small / name)).ReadAsArray()
        b = gdal.Open(str(big / name)).ReadAsArray()
        np.testing.assert_array_equal(a, b)
    f = gdal.Open(str(small / "f.tif")).ReadAsArray()
    np.testing.assert_array_equal(f[0][valid], (x[0] * 2.0 - x[2])[valid])
    np.testing.assert_array_equal(f[1][valid], x[4][valid])
    assert np.isnan(f[:, ~valid]).all()
    c = gdal.Open(str(small / "c.tif")).ReadAsArray()
    np.testing.assert_array_equal(c[valid], (x[1] > x[3])[valid].astype(np.uint8))
    assert (c[~valid] == 255).all()
    ds = gdal.Open(str(small / "c.tif"))
    band = ds.GetRasterBand(1)
    assert band.GetNoDataValue() == 255 and band.GetCategoryNames()[:2] == ["zero", "one"]
    assert band.GetColorTable().GetColorEntry(1)[:3] == (255, 0, 0)
    assert ds.GetGeoTransform() == gdal.Open(source.path).GetGeoTransform()
    assert [p.name for p in small.iterdir() if "partial" in p.name] == []


def test_region_output_grid(raster, tmp_path):
    source, data = raster
    region = Window(100, 50, 200, 120)
    map_pixels(source, [1, 2, 3, 4, 5], linear, outputs(tmp_path), region, budget_bytes=30_000)
    ds = gdal.Open(str(tmp_path / "f.tif"))
    assert (ds.RasterXSize, ds.RasterYSize) == (200, 120)
    assert ds.GetGeoTransform() == source.window_geotransform(region)
    f = ds.ReadAsArray()
    sub = data[:, 50:170, 100:300].astype(np.float32)
    valid = (sub != NODATA).all(axis=0)
    np.testing.assert_array_equal(f[1][valid], sub[4][valid])


def test_nan_and_nodata_never_reach_the_function(tmp_path):
    """Float input: NaN, ±inf and the nodata value are excluded and stay nodata."""
    data = smooth_field(3, 70, 90, dtype=np.float32)
    data[0, 5, 5] = np.nan
    data[1, 6, 6] = np.inf
    data[2, 7, 7] = -9999.0
    data[:, 60:, :] = -9999.0
    source = RasterSource.open(str(write_raster(tmp_path / "f.tif", data, nodata=-9999.0)))
    seen = []

    def fn(px):
        assert np.isfinite(px).all() and (px != -9999.0).all()
        seen.append(len(px))
        return px[:, :1]

    out = tmp_path / "o.tif"
    map_pixels(source, [1, 2, 3], fn, [PixelOutput(str(out), 1, np.float32, float("nan"))])
    result = gdal.Open(str(out)).ReadAsArray()
    invalid = ~np.isfinite(data).all(axis=0) | (data == -9999.0).any(axis=0)
    assert sum(seen) == int((~invalid).sum())
    assert np.isnan(result[invalid]).all() and np.isfinite(result[~invalid]).all()


def test_all_nodata_is_an_error(tmp_path):
    from deepraster.tiling.errors import RasterInputError

    source = RasterSource.open(str(write_raster(tmp_path / "z.tif", np.zeros((2, 20, 20), np.uint16), nodata=0)))
    with pytest.raises(RasterInputError, match="no valid pixel"):
        map_pixels(source, [1, 2], lambda p: p[:, :1], [PixelOutput(str(tmp_path / "o.tif"), 1, np.float32, 0.0)])
    with pytest.raises(SampleSizeError, match="no valid pixel"):
        sample_valid_pixels(source, [1], 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.tif"]


def test_cancel_leaves_nothing(raster, tmp_path):
    source, _ = raster
    calls = iter(range(1000))
    cancel = Callbacks(is_cancelled=lambda: next(calls) > 3)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RunCancelled):
        map_pixels(source, [1, 2, 3, 4, 5], linear, outputs(out), callbacks=cancel, budget_bytes=30_000)
    assert list(out.iterdir()) == []


def test_sample_uniform_reproducible_and_window_independent(raster):
    source, data = raster
    a = sample_valid_pixels(source, [1, 3], 2000, seed=7, budget_bytes=30_000)
    b = sample_valid_pixels(source, [1, 3], 2000, seed=7, budget_bytes=1 << 30)
    c = sample_valid_pixels(source, [1, 3], 2000, seed=8)
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.values, b.values)
    assert len(set(zip(a.rows, a.cols, strict=True)) & set(zip(c.rows, c.cols, strict=True))) < 400
    assert a.valid_count == int((data[0] != NODATA).sum())
    assert len(set(zip(a.rows, a.cols, strict=True))) == 2000  # without replacement
    np.testing.assert_array_equal(a.values[:, 0], data[0, a.rows, a.cols])
    np.testing.assert_array_equal(a.values[:, 1], data[2, a.rows, a.cols])
    assert (data[0, a.rows, a.cols] != NODATA).all()
    # uniform: the share of the sample in the left half matches the share of valid pixels there (binomial 4 sigma)
    valid = data[0] != NODATA
    share = valid[:, : COLS // 2].sum() / valid.sum()
    assert abs(np.mean(a.cols < COLS // 2) - share) < 4 * np.sqrt(share * (1 - share) / 2000)


def test_sample_region_and_too_large(raster):
    source, data = raster
    region = Window(100, 40, 80, 50)  # exactly the nodata block
    with pytest.raises(SampleSizeError, match=r"processing extent has no valid pixel .*Check the raster's nodata"):
        sample_valid_pixels(source, [1], 10, region=region)  # no "lower the sample size to at most 0" (issue 12)
    region = Window(0, 0, 50, 20)
    s = sample_valid_pixels(source, [1], 1000, region=region)
    assert s.valid_count == 1000 and s.rows.max() < 20 and s.cols.max() < 50
    with pytest.raises(SampleSizeError, match=r"sample size \(1001 pixels\) is larger .* \(1000\)\. Lower the sample"):
        sample_valid_pixels(source, [1], 1001, region=region)


def test_pixel_keys_are_distinct():
    rows, cols = np.divmod(np.arange(200_000), 1000)
    keys = pixel_keys(rows, cols, 1000, seed=0)
    assert len(np.unique(keys)) == keys.size
    assert not np.array_equal(keys, pixel_keys(rows, cols, 1000, seed=1))


def test_values_at_points(raster):
    source, data = raster
    rng = np.random.default_rng(0)
    cols = rng.integers(-20, COLS + 20, 3000)
    rows = rng.integers(-20, ROWS + 20, 3000)
    cols[:3], rows[:3] = [120, 120, 5], [60, 60, 5]  # nodata twice (a repeat), then valid
    values, valid = values_at_points(source, [2, 5], cols, rows, budget_bytes=30_000)
    inside = (cols >= 0) & (cols < COLS) & (rows >= 0) & (rows < ROWS)
    expected_valid = inside.copy()
    expected_valid[inside] = data[0, rows[inside], cols[inside]] != NODATA
    np.testing.assert_array_equal(valid, expected_valid)
    np.testing.assert_array_equal(values[valid, 0], data[1, rows[valid], cols[valid]])
    np.testing.assert_array_equal(values[valid, 1], data[4, rows[valid], cols[valid]])
    assert np.isnan(values[~valid]).all()
    assert list(valid[:3]) == [False, False, True]


def test_polygon_pixels():
    gt = (1000.0, 10.0, 0.0, 2000.0, 0.0, -10.0)
    rect = ogr.CreateGeometryFromWkt("POLYGON((1020 1990, 1071 1990, 1071 1927, 1020 1927, 1020 1990))")
    cols, rows = polygon_pixels(rect.ExportToWkb(), gt, (50, 50), None, np.random.default_rng(0))
    # centres x = 1025..1065 (cols 2..6), y = 1985..1935 (rows 1..6)
    assert set(zip(cols.tolist(), rows.tolist(), strict=True)) == {(c, r) for c in range(2, 7) for r in range(1, 7)}
    some = polygon_pixels(rect.ExportToWkb(), gt, (50, 50), 10, np.random.default_rng(1))
    again = polygon_pixels(rect.ExportToWkb(), gt, (50, 50), 10, np.random.default_rng(1))
    assert len(some[0]) == 10 and np.array_equal(some[0], again[0]) and np.array_equal(some[1], again[1])
    tiny = ogr.CreateGeometryFromWkt("POLYGON((1001 1999, 1002 1999, 1002 1998, 1001 1998, 1001 1999))")
    assert [a.tolist() for a in polygon_pixels(tiny.ExportToWkb(), gt, (50, 50), None,
                                               np.random.default_rng(0))] == [[0], [0]]
    outside = ogr.CreateGeometryFromWkt("POLYGON((0 0, 10 0, 10 10, 0 10, 0 0))")
    assert polygon_pixels(outside.ExportToWkb(), gt, (50, 50), None, np.random.default_rng(0))[0].size == 0


def test_large_polygon_is_scanned_on_a_coarser_grid(monkeypatch):
    """Above the rasterisation limit, odd steps pick pixel centres that still lie inside the polygon."""
    import deepraster.analysis.vector_pixels as vp

    monkeypatch.setattr(vp, "RASTERIZE_LIMIT", 500)
    gt = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    triangle = ogr.CreateGeometryFromWkt("POLYGON((0 0, 200 0, 0 -200, 0 0))")
    cols, rows = vp.polygon_pixels(triangle.ExportToWkb(), gt, (300, 300), None, np.random.default_rng(0))
    assert 0 < cols.size <= 500
    centres = pixel_centres(gt, cols, rows)
    assert (centres[:, 0] - centres[:, 1] <= 200).all()  # x + |y| < 200: inside the triangle
    assert cols.max() > 150 and rows.max() > 150  # spread over the whole polygon


def test_map_to_pixel_round_trip():
    gt = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)
    cols, rows = np.array([0, 5, 99]), np.array([0, 7, 3])
    xy = pixel_centres(gt, cols, rows)
    c, r = map_to_pixel(gt, xy[:, 0], xy[:, 1])
    assert c.tolist() == cols.tolist() and r.tolist() == rows.tolist()
