"""Unit tests of ``tiling.source``: opening and describing a raster, the window of a map extent.

Invalid inputs fail with clear messages naming the file; an extent maps to the pixels it touches, clipped to the
raster (the pure window arithmetic under it: tests/test_window_arithmetic.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from deepraster.tiling.errors import ExtentError, RasterInputError
from deepraster.tiling.grid import TileGrid
from deepraster.tiling.reader import InputTransform, StripReader
from deepraster.tiling.source import RasterSource
from deepraster.tiling.window import Window
from osgeo import gdal, osr

gdal.UseExceptions()

GT = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)


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


def test_complex_raster_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """SAR single-look complex data: refused (its imaginary part was dropped silently), with the conversion to make."""
    path = tmp_path / "slc.tif"
    gdal.GetDriverByName("GTiff").Create(str(path), 4, 4, 2, gdal.GDT_CFloat32).FlushCache()
    with pytest.raises(RasterInputError, match=r"slc.tif holds complex values \(CFloat32.*amplitude or intensity"):
        RasterSource.open(str(path))


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
