"""Unit tests of ``tiling.writer`` (streaming GeoTIFF output).

The file is tiled, compressed and carries the georeferencing and styling it was given; rows streamed in any chunking
give the exact array; failures leave nothing behind and never touch an older file before commit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from deepraster.tiling.errors import OutputError
from deepraster.tiling.writer import GeoTiffWriter, RasterSpec
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
