"""Unit tests of ``tiling.writer`` (streaming GeoTIFF output) and ``tiling.reader`` (raster checks, strips).

Writer: the file is tiled, compressed and carries the georeferencing and styling it was given; rows streamed in
any chunking give the exact array; failures leave nothing behind and never touch an older file before commit.
Reader: invalid inputs fail with clear messages; nodata, NaN, masks and mask rules make pixels invalid;
padding reflects real pixels; the normalisation is the documented formula.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from deepraster.tiling.errors import ExtentError, OutputError, RasterInputError
from deepraster.tiling.grid import TileGrid, Window
from deepraster.tiling.reader import InputTransform, RasterSource, RowBuffer, Strip, StripReader, ndwi_rule
from deepraster.tiling.writer import GeoTiffWriter, RasterSpec
from helpers import write_blocked_raster
from osgeo import gdal, osr

gdal.UseExceptions()

GT = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)


def _wkt(epsg: int = 32633) -> str:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    return srs.ExportToWkt()


def _spec(width: int = 301, height: int = 700, bands: int = 3, dtype=np.uint16, **kw) -> RasterSpec:
    return RasterSpec(width=width, height=height, bands=bands, dtype=np.dtype(dtype), geotransform=GT,
                      projection=_wkt(), **kw)


def _write_all(writer: GeoTiffWriter, data: np.ndarray, sizes: list[int]) -> None:
    row = 0
    for n in sizes:
        writer.write(row, data[:, row:row + n])
        row += n
    assert row == data.shape[1]


def _read(path: Path) -> np.ndarray:
    ds = gdal.Open(str(path))
    return ds.ReadAsArray().reshape(ds.RasterCount, ds.RasterYSize, ds.RasterXSize)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------------------------------- writer


def test_writer_file_is_tiled_compressed_and_georeferenced(tmp_path: Path) -> None:
    """The committed file is a tiled DEFLATE GeoTIFF with the spec's geotransform, CRS, nodata and styling."""
    spec = _spec(width=300, height=200, bands=1, dtype=np.uint8, nodata=255, band_descriptions=["class"],
                 color_table={0: (10, 20, 30), 2: (200, 100, 50)}, category_names=["clear", "", "cloud"])
    data = (np.arange(300 * 200) % 3).astype(np.uint8).reshape(1, 200, 300)
    writer = GeoTiffWriter(tmp_path / "classes.tif", spec)
    _write_all(writer, data, [200])
    assert writer.commit() == tmp_path / "classes.tif"

    ds = gdal.Open(str(tmp_path / "classes.tif"))
    info = gdal.Info(ds, format="json")
    assert info["metadata"]["IMAGE_STRUCTURE"]["COMPRESSION"] == "DEFLATE"
    assert info["metadata"]["IMAGE_STRUCTURE"]["PREDICTOR"] == "2"
    band = info["bands"][0]
    assert band["block"] == [256, 256]
    assert band["type"] == "Byte" and band["noDataValue"] == 255
    assert band["description"] == "class"
    assert band["categories"] == ["clear", "", "cloud"]
    assert band["colorInterpretation"] == "Palette"
    entries = band["colorTable"]["entries"]
    assert entries[0] == [10, 20, 30, 255] and entries[2] == [200, 100, 50, 255]
    assert ds.GetGeoTransform() == GT
    srs = osr.SpatialReference(wkt=ds.GetProjection())
    assert srs.GetAuthorityCode(None) == "32633"
    np.testing.assert_array_equal(_read(tmp_path / "classes.tif"), data)


def test_writer_float_probabilities_with_nan_nodata(tmp_path: Path) -> None:
    """Float32 multi-band output keeps NaN nodata, per-band descriptions and the floating-point predictor."""
    rng = np.random.default_rng(1)
    data = rng.random((2, 70, 90), dtype=np.float32)
    data[:, 5:9, 10:20] = np.nan
    spec = _spec(width=90, height=70, bands=2, dtype=np.float32, nodata=float("nan"),
                 band_descriptions=["probability of a", "probability of b"])
    with GeoTiffWriter(tmp_path / "p.tif", spec) as writer:
        _write_all(writer, data, [33, 37])
        writer.commit()
    ds = gdal.Open(str(tmp_path / "p.tif"))
    assert ds.GetMetadata("IMAGE_STRUCTURE")["PREDICTOR"] == "3"
    assert [ds.GetRasterBand(i + 1).GetDescription() for i in range(2)] == ["probability of a", "probability of b"]
    assert np.isnan(ds.GetRasterBand(1).GetNoDataValue())
    np.testing.assert_array_equal(_read(tmp_path / "p.tif"), data)  # NaNs compare equal position by position


@pytest.mark.parametrize("block", [256, 64])
def test_writer_odd_chunks_give_exact_array(tmp_path: Path, block: int) -> None:
    """Rows streamed in odd-sized chunks (crossing block rows in every way) give back the exact array."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 65535, size=(3, 700, 301), dtype=np.uint16)
    writer = GeoTiffWriter(tmp_path / "o.tif", _spec(), block_size=block)
    _write_all(writer, data, [1, 255, 3, 300, 100, 41])
    writer.commit()
    np.testing.assert_array_equal(_read(tmp_path / "o.tif"), data)
    assert _leftovers(tmp_path) == ["o.tif"]


def test_writer_rows_out_of_order_are_refused(tmp_path: Path) -> None:
    """Rows must arrive in order: a gap is a programming error, not silent corruption."""
    with GeoTiffWriter(tmp_path / "o.tif", _spec()) as writer:
        writer.write(0, np.zeros((3, 10, 301), np.uint16))
        with pytest.raises(ValueError, match="expected row 10"):
            writer.write(20, np.zeros((3, 10, 301), np.uint16))
    assert _leftovers(tmp_path) == []


def test_writer_column_panels_give_exact_array_and_order_is_checked(tmp_path: Path) -> None:
    """Panels (left to right, each top to bottom, edges on block edges) give the exact array; a panel that does
    not start where the last ended, or rows of another panel before one is finished, are refused."""
    rng = np.random.default_rng(1)
    data = rng.integers(0, 65535, size=(3, 700, 301), dtype=np.uint16)
    writer = GeoTiffWriter(tmp_path / "o.tif", _spec(), block_size=64)
    with pytest.raises(ValueError, match="multiple of the block size"):
        writer.write(0, data[:, :10, :100], col_off=0)
    for col_off, col_end in ((0, 128), (128, 256), (256, 301)):
        for row_off in range(0, 700, 150):
            writer.write(row_off, data[:, row_off:row_off + 150, col_off:col_end], col_off=col_off)
            with pytest.raises(ValueError, match="is unfinished|expected a panel starting"):
                if row_off + 150 < 700:
                    writer.write(row_off + 150, data[:, :10, :64], col_off=col_off + 128)
                else:
                    writer.write(0, data[:, :10, :64], col_off=col_off + 64)
    writer.commit()
    np.testing.assert_array_equal(_read(tmp_path / "o.tif"), data)


def test_writer_abort_leaves_nothing(tmp_path: Path) -> None:
    """``abort()`` after some rows removes the temporary file: the folder is as before."""
    writer = GeoTiffWriter(tmp_path / "o.tif", _spec())
    writer.write(0, np.ones((3, 300, 301), np.uint16))
    assert any(".partial" in n for n in _leftovers(tmp_path))  # streaming into a temporary name
    writer.abort()
    assert _leftovers(tmp_path) == []


def test_writer_exception_in_with_leaves_nothing_and_keeps_old_file(tmp_path: Path) -> None:
    """An exception inside ``with`` removes the partial file; an older file at the target stays untouched."""
    target = tmp_path / "o.tif"
    target.write_bytes(b"older result")
    with pytest.raises(RuntimeError, match="boom"), GeoTiffWriter(target, _spec()) as writer:
        writer.write(0, np.ones((3, 400, 301), np.uint16))
        assert target.read_bytes() == b"older result"
        raise RuntimeError("boom")
    assert _leftovers(tmp_path) == ["o.tif"]
    assert target.read_bytes() == b"older result"


def test_writer_with_block_without_commit_leaves_nothing(tmp_path: Path) -> None:
    """Leaving ``with`` without commit (e.g. an early return) is an abort."""
    with GeoTiffWriter(tmp_path / "o.tif", _spec()) as writer:
        writer.write(0, np.ones((3, 700, 301), np.uint16))
    assert _leftovers(tmp_path) == []


def test_writer_commit_with_missing_rows_fails_cleanly(tmp_path: Path) -> None:
    """Committing before every row was produced raises OutputError and leaves no file."""
    writer = GeoTiffWriter(tmp_path / "o.tif", _spec())
    writer.write(0, np.ones((3, 100, 301), np.uint16))
    with pytest.raises(OutputError, match="100 of 700 rows"):
        writer.commit()
    assert _leftovers(tmp_path) == []


def test_writer_commit_replaces_old_file_and_stale_aux(tmp_path: Path) -> None:
    """``commit()`` replaces an older file and deletes its stale ``.aux.xml`` (old statistics/styles)."""
    target = tmp_path / "o.tif"
    target.write_bytes(b"older result")
    aux = tmp_path / "o.tif.aux.xml"
    aux.write_text("<PAMDataset><Metadata><MDI key='STATISTICS_MAXIMUM'>9</MDI></Metadata></PAMDataset>")
    data = np.full((3, 700, 301), 42, np.uint16)
    writer = GeoTiffWriter(target, _spec())
    _write_all(writer, data, [700])
    assert target.read_bytes() == b"older result"  # untouched until commit
    writer.commit()
    assert _leftovers(tmp_path) == ["o.tif"]
    np.testing.assert_array_equal(_read(target), data)


def test_writer_commit_moves_own_aux_with_category_names(tmp_path: Path) -> None:
    """Category names live in the PAM ``.aux.xml``: it is renamed with the file, never left under a temp name."""
    target = tmp_path / "c.tif"
    (tmp_path / "c.tif.aux.xml").write_text("<PAMDataset/>")
    spec = _spec(width=20, height=10, bands=1, dtype=np.uint8, category_names=["a", "b"])
    writer = GeoTiffWriter(target, spec)
    writer.write(0, np.ones((1, 10, 20), np.uint8))
    writer.commit()
    assert _leftovers(tmp_path) == ["c.tif", "c.tif.aux.xml"]
    assert gdal.Info(str(target), format="json")["bands"][0]["categories"] == ["a", "b"]


@pytest.mark.parametrize("case", ["missing_folder", "folder_is_a_file", "target_is_a_folder"])
def test_writer_unwritable_target_raises_output_error(tmp_path: Path, case: str) -> None:
    """Targets that cannot be created raise OutputError naming the folder (tests run as root, so permissions
    cannot be used: a path under a plain file stands for an unusable folder)."""
    (tmp_path / "some_file.txt").write_text("not a folder")
    (tmp_path / "a_folder.tif").mkdir()
    target, named = {
        "missing_folder": (tmp_path / "nope" / "out.tif", tmp_path / "nope"),
        "folder_is_a_file": (tmp_path / "some_file.txt" / "out.tif", tmp_path / "some_file.txt"),
        "target_is_a_folder": (tmp_path / "a_folder.tif", tmp_path / "a_folder.tif"),
    }[case]
    with pytest.raises(OutputError) as err:
        GeoTiffWriter(target, _spec())
    assert str(named) in str(err.value)
    assert _leftovers(tmp_path) == ["a_folder.tif", "some_file.txt"]


# --------------------------------------------------------------------------------------------------- RasterSource


@pytest.mark.parametrize("content", [b"This is not a raster at all.\n", b""])
def test_open_non_raster_raises_raster_input_error(tmp_path: Path, content: bytes) -> None:
    """A text file or an empty file is refused with RasterInputError naming the path."""
    path = tmp_path / "input.tif"
    path.write_bytes(content)
    with pytest.raises(RasterInputError, match="input.tif"):
        RasterSource.open(str(path))


def test_open_missing_file_raises_raster_input_error(tmp_path: Path) -> None:
    """A path that does not exist is a RasterInputError, not a bare RuntimeError."""
    with pytest.raises(RasterInputError, match="missing.tif"):
        RasterSource.open(str(tmp_path / "missing.tif"))


def test_open_describes_raster(make_raster: Callable[..., Path]) -> None:
    """``open`` reports size, bands, georeferencing, descriptions, nodata and types as written."""
    data = np.zeros((3, 40, 70), np.int16)
    path = make_raster("d.tif", data, nodata=-9999, descriptions=("B02", "B03", "B04"))
    src = RasterSource.open(str(path))
    assert (src.width, src.height, src.band_count) == (70, 40, 3)
    assert src.geotransform == GT
    assert osr.SpatialReference(wkt=src.projection).GetAuthorityCode(None) == "32633"
    assert src.descriptions == ("B02", "B03", "B04")
    assert src.nodata == (-9999.0,) * 3
    assert src.dtypes == ("Int16",) * 3
    assert src.window == Window(0, 0, 70, 40)
    assert not src.has_dataset_mask  # nodata values, not a mask band


def test_check_bands_names_band_count(make_raster: Callable[..., Path]) -> None:
    """A band number outside the raster is refused with a message naming the bad band and the band count."""
    src = RasterSource.open(str(make_raster("b.tif", np.zeros((4, 8, 8), np.uint16))))
    src.check_bands([1, 4])
    with pytest.raises(RasterInputError, match=r"5 .*has 4 band\(s\)"):
        src.check_bands([1, 5])
    with pytest.raises(RasterInputError, match="0"):
        src.check_bands([0])
    with pytest.raises(RasterInputError, match="has 4 band"):
        StripReader(src, TileGrid(src.window, 16, 0), InputTransform(bands=(2, 7)))


@pytest.fixture
def src_100x80(make_raster: Callable[..., Path]) -> RasterSource:
    """A 100×80 raster, 10 m pixels, origin (500000, 5800000)."""
    return RasterSource.open(str(make_raster("w.tif", np.zeros((1, 80, 100), np.uint8))))


def test_window_for_bounds_inside(src_100x80: RasterSource) -> None:
    """An extent on pixel edges maps to exactly those pixels; one inside pixels takes every pixel it touches."""
    x0, y0 = GT[0], GT[3]
    assert src_100x80.window_for_bounds(x0 + 100, y0 - 250, x0 + 300, y0 - 50) == Window(10, 5, 20, 20)
    assert src_100x80.window_for_bounds(x0 + 105, y0 - 245, x0 + 295, y0 - 55) == Window(10, 5, 20, 20)
    assert src_100x80.window_for_bounds(x0 + 101, y0 - 249, x0 + 102, y0 - 248) == Window(10, 24, 1, 1)


def test_window_for_bounds_partly_outside_is_clipped(src_100x80: RasterSource) -> None:
    """An extent reaching past the raster is clipped to it."""
    x0, y0 = GT[0], GT[3]
    assert src_100x80.window_for_bounds(x0 - 500, y0 - 300, x0 + 200, y0 + 500) == Window(0, 0, 20, 30)
    assert src_100x80.window_for_bounds(x0 + 900, y0 - 2000, x0 + 5000, y0 - 700) == Window(90, 70, 10, 10)
    whole = src_100x80.window_for_bounds(x0 - 1, y0 - 801, x0 + 1001, y0 + 1)
    assert whole == src_100x80.window


def test_window_for_bounds_outside_or_empty_raises(src_100x80: RasterSource) -> None:
    """An extent that misses the raster, or has no width/height, raises ExtentError with a clear message."""
    x0, y0 = GT[0], GT[3]
    with pytest.raises(ExtentError, match="does not overlap"):
        src_100x80.window_for_bounds(x0 + 2000, y0 - 300, x0 + 3000, y0 - 100)
    with pytest.raises(ExtentError, match="does not overlap"):
        src_100x80.window_for_bounds(x0 + 1000, y0 - 300, x0 + 1100, y0 - 100)  # touches the right edge only
    with pytest.raises(ExtentError, match="empty"):
        src_100x80.window_for_bounds(x0 + 100, y0 - 300, x0 + 100, y0 - 100)
    with pytest.raises(ExtentError, match="empty"):
        src_100x80.window_for_bounds(x0 + 300, y0 - 300, x0 + 100, y0 - 100)


def test_window_geotransform_shifts_origin(src_100x80: RasterSource) -> None:
    """A window's geotransform keeps the pixel size and moves the origin by its offset."""
    assert src_100x80.window_geotransform(Window(7, 3, 10, 10)) == (GT[0] + 70, 10.0, 0.0, GT[3] - 30, 0.0, -10.0)


# --------------------------------------------------------------------------------------------------- StripReader


def _strips(path: Path | str, tile: int, overlap: int = 0, bands: tuple[int, ...] = (1,), region: Window | None = None,
            mask_rules=(), **transform) -> tuple[TileGrid, list[Strip]]:
    src = RasterSource.open(str(path))
    grid = TileGrid(region or src.window, tile, overlap)
    reader = StripReader(src, grid, InputTransform(bands=bands, **transform), mask_rules)
    return grid, list(reader)


def _assemble_valid(grid: TileGrid, strips: list[Strip], shape: tuple[int, int]) -> np.ndarray:
    """Validity of every raster pixel as seen by the strips (all strips agree where they overlap)."""
    valid, seen = np.zeros(shape, bool), np.zeros(shape, bool)
    assert [s.grid_row for s in strips] == list(range(grid.shape[0]))
    for s in strips:
        part = s.window.intersection(Window(0, 0, shape[1], shape[0]))
        mine, known = s.valid[part.relative_to(s.window).slices()], seen[part.slices()]
        np.testing.assert_array_equal(mine[known], valid[part.slices()][known])  # overlapping strips agree
        valid[part.slices()] = mine
        seen[part.slices()] = True
    assert seen.all()
    return valid


def test_reader_nodata_in_any_read_band_is_invalid(make_raster: Callable[..., Path]) -> None:
    """A pixel equal to its band's nodata value, in any band read, is invalid; its data is 0."""
    data = np.full((2, 50, 60), 100, np.uint16)
    data[0, 10:20, 5:15] = 0
    data[1, 40, 50] = 0
    path = make_raster("n.tif", data, nodata=0)
    grid, strips = _strips(path, 32, 8, bands=(1, 2))
    expected = (data != 0).all(axis=0)
    np.testing.assert_array_equal(_assemble_valid(grid, strips, (50, 60)), expected)
    for s in strips:
        assert (s.data[:, ~s.valid] == 0).all()
        assert s.valid_count == int(s.valid.sum())
    _, only_second = _strips(path, 32, 8, bands=(2,))  # band 1 not read: its nodata does not matter
    assert _assemble_valid(grid, only_second, (50, 60)).sum() == 50 * 60 - 1


def test_reader_nan_in_float_raster_is_invalid(make_raster: Callable[..., Path]) -> None:
    """NaN (and infinities) in a float raster without a nodata value are invalid pixels."""
    data = np.ones((1, 40, 40), np.float32)
    data[0, 3, 4] = np.nan
    data[0, 30, 31] = np.inf
    grid, strips = _strips(make_raster("f.tif", data), 16, 4)
    valid = _assemble_valid(grid, strips, (40, 40))
    assert not valid[3, 4] and not valid[30, 31] and valid.sum() == 40 * 40 - 2
    assert all(np.isfinite(s.data).all() for s in strips)


def test_reader_alpha_band_makes_pixels_invalid(tmp_path: Path) -> None:
    """An RGBA raster: where alpha is 0 the RGB pixels are invalid (the GDAL dataset mask is honoured)."""
    path = tmp_path / "rgba.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 50, 40, 4, gdal.GDT_Byte, ["PHOTOMETRIC=RGB", "ALPHA=YES"])
    ds.SetGeoTransform(GT)
    alpha = np.full((40, 50), 255, np.uint8)
    alpha[5:25, 30:45] = 0
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(np.full((40, 50), 80 + b, np.uint8))
    ds.GetRasterBand(4).WriteArray(alpha)
    ds = None
    src = RasterSource.open(str(path))
    assert src.has_dataset_mask
    grid, strips = _strips(path, 32, 8, bands=(1, 2, 3))
    np.testing.assert_array_equal(_assemble_valid(grid, strips, (40, 50)), alpha > 0)


def test_reader_internal_mask_band_makes_pixels_invalid(tmp_path: Path) -> None:
    """A per-dataset mask band (internal TIFF mask) marks masked pixels invalid."""
    path = tmp_path / "masked.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 30, 30, 2, gdal.GDT_UInt16)
    ds.SetGeoTransform(GT)
    for b in range(2):
        ds.GetRasterBand(b + 1).WriteArray(np.full((30, 30), 500, np.uint16))
    ds.CreateMaskBand(gdal.GMF_PER_DATASET)
    mask = np.full((30, 30), 255, np.uint8)
    mask[:, :7] = 0
    ds.GetRasterBand(1).GetMaskBand().WriteArray(mask)
    ds = None
    grid, strips = _strips(path, 16, 4, bands=(2,))
    np.testing.assert_array_equal(_assemble_valid(grid, strips, (30, 30)), mask > 0)


@pytest.mark.parametrize("keep", ["water", "land"])
def test_reader_ndwi_rule_keeps_water_or_land(make_raster: Callable[..., Path], keep: str) -> None:
    """The NDWI rule keeps water (NDWI ≥ threshold) or land (NDWI < threshold); NDWI undefined is invalid."""
    green = np.tile(np.array([300, 100, 0, 200, 250], np.uint16), (10, 6))[:, :30]
    nir = np.tile(np.array([100, 300, 0, 200, 260], np.uint16), (10, 6))[:, :30]
    path = make_raster("ndwi.tif", np.stack([np.full_like(green, 7), green, nir]))
    grid, strips = _strips(path, 16, 0, bands=(1,), mask_rules=[ndwi_rule(2, 3, 0.0, keep)])
    g, n = green.astype(float), nir.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ndwi = (g - n) / (g + n)
    defined = (g + n) != 0
    expected = defined & (ndwi >= 0.0) if keep == "water" else defined & (ndwi < 0.0)
    valid = _assemble_valid(grid, strips, (10, 30))
    np.testing.assert_array_equal(valid, expected)
    assert valid.any() and not valid.all()
    assert strips[0].data.shape[0] == 1  # the rule's bands are read, not passed to the model


def test_ndwi_rule_rejects_unknown_keep() -> None:
    """``keep`` must be 'water' or 'land'."""
    with pytest.raises(ValueError, match="water"):
        ndwi_rule(2, 4, 0.0, "clouds")


def test_reader_small_raster_is_reflection_padded(make_raster: Callable[..., Path]) -> None:
    """A 100×60 raster with 256 px tiles gives one strip of full tile height, valid exactly over the real
    pixels, padded by reflection of the normalised data."""
    rng = np.random.default_rng(3)
    raw = rng.integers(1, 1000, size=(2, 60, 100), dtype=np.uint16)
    path = make_raster("small.tif", raw)
    grid, strips = _strips(path, 256, 32, bands=(2, 1), scale=0.01)
    (strip,) = strips
    assert strip.window == Window(-78, -98, 256, 256)
    assert strip.data.shape == (2, 256, 256) and strip.valid.shape == (256, 256)
    inside = np.zeros((256, 256), bool)
    inside[98:158, 78:178] = True
    np.testing.assert_array_equal(strip.valid, inside)
    assert strip.valid_count == 6000
    norm = raw[[1, 0]].astype(np.float32) * np.float32(0.01)
    np.testing.assert_allclose(strip.data[:, 98:158, 78:178], norm, rtol=1e-6)
    np.testing.assert_allclose(strip.data, np.pad(norm, ((0, 0), (98, 98), (78, 78)), mode="reflect"), rtol=1e-6)


def test_reader_one_pixel_raster_is_edge_padded(make_raster: Callable[..., Path]) -> None:
    """A 1×1 raster (reflection impossible) is padded with its single value."""
    path = make_raster("one.tif", np.full((1, 1, 1), 9, np.uint16))
    _, (strip,) = _strips(path, 16, 0)
    np.testing.assert_array_equal(strip.data, 9.0)
    assert strip.valid.sum() == 1


def test_reader_region_strips_read_real_neighbours(make_raster: Callable[..., Path]) -> None:
    """For a region inside the raster, tile footprints reaching past the region hold the real pixels."""
    raw = np.arange(80 * 90, dtype=np.uint16).reshape(1, 80, 90)
    path = make_raster("r.tif", raw)
    region = Window(20, 30, 20, 10)  # smaller than a tile: the tile is centred and reaches out of the region
    _, (strip,) = _strips(path, 32, 0, region=region)
    assert strip.window == Window(14, 19, 32, 32)
    np.testing.assert_array_equal(strip.data[0], raw[0, 19:51, 14:46].astype(np.float32))
    assert strip.valid.all()


def test_reader_stops_its_thread_when_left_early(make_raster: Callable[..., Path]) -> None:
    """Leaving the iteration early stops the read-ahead thread (no reader left running)."""
    path = make_raster("big.tif", np.ones((1, 400, 50), np.uint16))
    src = RasterSource.open(str(path))
    reader = StripReader(src, TileGrid(src.window, 16, 0), InputTransform(bands=(1,)))
    for strip in reader:
        assert strip.grid_row == 0
        break
    reader.close()
    assert not any(t.name == "deepraster-reader" and t.is_alive() for t in threading.enumerate())


def test_input_transform_formula() -> None:
    """``apply`` equals ((raw · scale + offset) − mean) / std per band, as float32."""
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 10000, size=(3, 20, 30), dtype=np.uint16)
    mean, std = (0.1, 0.2, 0.3), (0.05, 0.1, 0.2)
    t = InputTransform(bands=(1, 2, 3), scale=1e-4, offset=-0.1, shift=mean, divisor=std)
    out = t.apply(raw)
    expected = ((raw * 1e-4 - 0.1) - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    assert out.dtype == np.float32 and out.shape == raw.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(InputTransform(bands=(1, 2, 3), scale=2.0, offset=1.0).apply(raw), raw * 2.0 + 1.0,
                               rtol=1e-6)
    assert raw.dtype == np.uint16 and raw.max() > 1  # the input is not modified in place


class _CountingDataset:
    """A GDAL dataset that counts the rows each ``ReadAsArray`` call decodes (everything else passes through)."""

    def __init__(self, ds: gdal.Dataset) -> None:
        self.ds, self.rows_read = ds, []

    def ReadAsArray(self, xoff, yoff, xsize, ysize, **kwargs):  # noqa: N802 (GDAL's name)
        self.rows_read.append((yoff, yoff + ysize))
        return self.ds.ReadAsArray(xoff, yoff, xsize, ysize, **kwargs)

    def __getattr__(self, name):
        return getattr(self.ds, name)


@pytest.mark.parametrize(("block", "tile", "overlap"), [(64, 48, 16), (16, 40, 24), (256, 64, 32)])
def test_row_buffer_reads_each_block_row_once(tmp_path: Path, block: int, tile: int, overlap: int) -> None:
    """Overlapping strips read through the row buffer equal direct reads, and every row of the file is read once,
    in whole block rows (a strip and one block row held at most)."""
    data = np.random.default_rng(2).integers(1, 9999, size=(3, 333, 70), dtype=np.uint16)
    path = write_blocked_raster(tmp_path / "b.tif", data, block=block)
    ds = _CountingDataset(gdal.Open(str(path)))
    rows = RowBuffer(ds, [3, 1], 5, 60)
    grid = TileGrid(Window(0, 0, 70, 333), tile, overlap)
    for start in grid.row_starts:
        r0, r1 = max(start, 0), min(start + tile, 333)
        got = rows.rows(r0, r1)
        np.testing.assert_array_equal(got, data[[2, 0], r0:r1, 5:65])
        assert rows.data.shape[1] <= tile + block
    reads = ds.rows_read
    assert [r for pair in reads for r in pair] == sorted(r for pair in reads for r in pair)  # no row twice
    assert reads[0][0] == 0 and reads[-1][1] == 333
    assert all(end % block == 0 or end == 333 for _, end in reads)
