"""Unit tests of ``tiling.reader``: strips of normalised input read ahead of the model.

Nodata, NaN, masks and mask rules make pixels invalid; padding reflects real pixels; the reader's thread stops when
it is left early; the normalisation is the documented formula; each block row of the file is decoded once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from deepraster.tiling.errors import RasterInputError
from deepraster.tiling.grid import TileGrid
from deepraster.tiling.reader import InputTransform, RowBuffer, Strip, StripReader, ndwi_rule
from deepraster.tiling.source import RasterSource
from deepraster.tiling.window import Window
from helpers import write_blocked_raster
from osgeo import gdal

gdal.UseExceptions()

GT = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)


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


@pytest.mark.parametrize(("raised", "expected", "message"), [
    (RuntimeError("bad block"), RasterInputError, r"Cannot read the pixels of .*b\.tif \(bad block\)"),
    (ValueError("a bug"), ValueError, "a bug"),
    (SystemExit(1), RasterInputError, "Reading .*b.tif stopped unexpectedly"),
])
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # SystemExit ends the thread
def test_reader_thread_failure_reaches_the_consumer(make_raster: Callable[..., Path], monkeypatch,
                                                     raised: BaseException, expected: type, message: str) -> None:
    """What stops the read-ahead thread is raised in the consumer (GDAL errors as RasterInputError); even an exit
    that is not an Exception ends the iteration with an error instead of leaving the consumer waiting."""
    src = RasterSource.open(str(make_raster("b.tif", np.ones((1, 64, 20), np.uint16))))
    reader = StripReader(src, TileGrid(src.window, 16, 0), InputTransform(bands=(1,)))
    real, calls = StripReader.read_strip, []

    def read_strip(self, ds, grid_row):
        calls.append(grid_row)
        if grid_row == 2:
            raise raised
        return real(self, ds, grid_row)

    monkeypatch.setattr(StripReader, "read_strip", read_strip)
    rows = []
    with pytest.raises(expected, match=message):
        rows.extend(strip.grid_row for strip in reader)
    assert rows == [0, 1] and calls == [0, 1, 2]
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
