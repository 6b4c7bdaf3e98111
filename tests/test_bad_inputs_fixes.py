"""Issue 12, the defects behind the bad-input matrix, each at its root: value scale, band lists, GCP rasters, tile
size against the raster and memory, all-nodata rasters found fast, small rasters clustered whole, folds advice that
can be followed, archives with a top folder, unchecked weights, terminal codes in weights errors."""

from __future__ import annotations

import json
import math
import time
import zipfile

import numpy as np
import pytest
from analysis_scene import run
from bad_inputs_cases import S2_4, S2_6, world
from helpers import MODEL_4B_L1C, recording_feedback, smooth_field, write_raster

__all__ = ["world"]  # the session fixture the QGIS tests use


# ------------------------------------------------------------------------------------------------ core
@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -float("inf"), 0.0])
def test_unusable_value_scale_refused(scale):
    from deepraster.models.inputs import check_value_scale
    from deepraster.tiling.errors import DeepRasterError

    with pytest.raises(DeepRasterError, match="is not usable: it must be a finite number other than 0"):
        check_value_scale(scale, 0.0)
    with pytest.raises(DeepRasterError, match="offset nan is not usable"):
        check_value_scale(1.0, float("nan"))
    check_value_scale(-0.5, 10.0)  # a negative scale is a conversion too (inverted values)


def test_band_numbers_in_every_form():
    from deepraster.algorithms.band_parameters import parse_band_numbers
    from deepraster.models.errors import BandMappingError

    assert parse_band_numbers("1,2,3,7") == parse_band_numbers("1;2;3;7") == [1, 2, 3, 7]
    assert parse_band_numbers(" 4, 3 ;2 ") == [4, 3, 2]
    assert parse_band_numbers([1, "2", 3.0]) == [1, 2, 3]
    for bad in ("0", "1.5", "red", "-1"):
        with pytest.raises(BandMappingError, match=r"is not a band number.*separated by semicolons or commas"):
            parse_band_numbers(f"1,{bad}")


def test_tile_clamped_to_the_raster():
    from deepraster.models.inputs import fit_tile_to_region
    from deepraster.tiling.window import Window

    notes: list[str] = []
    assert fit_tile_to_region(8192, Window(0, 0, 512, 256), 32, 256, notes.append) == 512
    assert "larger than the 512 × 256 px to process: using 512 px" in notes[0]
    assert fit_tile_to_region(8192, Window(0, 0, 50, 20), 32, 256, notes.append) == 256  # never below the default
    assert fit_tile_to_region(8192, Window(0, 0, 1, 20000), 32, 256, notes.append) == 8192  # thin: long side rules
    assert fit_tile_to_region(256, Window(0, 0, 50, 20), 32, 256, notes.append) == 256 and len(notes) == 2


def test_tile_memory_refused_with_the_size_that_fits():
    from deepraster.models.inputs import MODEL_BYTES_PER_PIXEL, check_tile_memory
    from deepraster.tiling.errors import DeepRasterError

    gib = 1024**3
    check_tile_memory(2048, 4, "cpu", 32, 8 * gib)  # 2 GiB: fits
    with pytest.raises(DeepRasterError, match=r"Tiles of 8192 px would need about 32\.0 GiB .*more than the 8\.0 GiB "
                                              r"free on the CPU\. Choose a tile size of at most 4096 px"):
        check_tile_memory(8192, 4, "cpu", 32, 8 * gib)
    with pytest.raises(DeepRasterError, match=r"at most \d+ px or a smaller batch size"):
        check_tile_memory(2048, 8, "cuda", 32, 8 * gib)
    check_tile_memory(8192, 1, "cpu", 32, None)  # memory unknown: no refusal
    assert math.isclose(MODEL_BYTES_PER_PIXEL, 512)


def test_all_nodata_found_in_seconds(tmp_path):
    """Item 19: a 30000² raster with nothing written (every block nodata) is refused before any tile is read."""
    from deepraster.tiling.errors import RasterInputError
    from deepraster.tiling.pixel_sampling import require_valid_pixel
    from deepraster.tiling.source import RasterSource
    from osgeo import gdal

    path = tmp_path / "empty.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 30000, 30000, 4, gdal.GDT_UInt16,
                                              ["TILED=YES", "SPARSE_OK=TRUE", "COMPRESS=DEFLATE"])
    for b in range(4):
        ds.GetRasterBand(b + 1).SetNoDataValue(0)
    ds = None
    start = time.perf_counter()
    with pytest.raises(RasterInputError, match="no valid pixel .*nothing to process"):
        require_valid_pixel(RasterSource.open(str(path)), [1, 2, 3, 4])
    assert time.perf_counter() - start < 20


def test_valid_pixel_check_reads_a_few_windows_not_the_raster(tmp_path):
    """The check before a per-pixel run reads five small windows of a valid raster, not the whole of it (a
    decimated read of a file without overviews decodes every block: 3.7 s against 0.09 s for 8192² × 4 float
    bands). Shown with a VRT whose corner comes from a missing file: reading the whole raster would fail there."""
    import numpy as np
    from deepraster.tiling.pixel_sampling import probe_windows, require_valid_pixel
    from deepraster.tiling.source import RasterSource
    from deepraster.tiling.window import Window
    from helpers import write_raster

    centre = write_raster(tmp_path / "centre.tif", np.full((1, 64, 64), 7, np.uint8))
    source = ('<SimpleSource><SourceFilename relativeToVRT="1">{}</SourceFilename><SourceBand>1</SourceBand>'
              '<SrcRect xOff="0" yOff="0" xSize="64" ySize="64"/><DstRect xOff="{}" yOff="{}" xSize="64" '
              'ySize="64"/></SimpleSource>')
    vrt = tmp_path / "mosaic.vrt"
    vrt.write_text('<VRTDataset rasterXSize="1024" rasterYSize="1024"><VRTRasterBand dataType="Byte" band="1">'
                   + source.format(centre.name, 480, 480) + source.format("missing.tif", 0, 0)
                   + "</VRTRasterBand></VRTDataset>")
    require_valid_pixel(RasterSource.open(str(vrt)), [1])  # the centre window has valid pixels: no more reads
    region = Window(10, 20, 100, 50)
    probes = probe_windows(region)
    assert len(probes) == 5 and all(p.intersection(region) == p and p.width == 64 and p.height == 50 for p in probes)


def test_folds_advice_never_below_two():
    from deepraster.analysis.errors import TrainingDataError
    from deepraster.analysis.validation import ValidationPlan, make_folds

    with pytest.raises(TrainingDataError, match=r"no number of folds works here: add reference data") as caught:
        make_folds(ValidationPlan("random", 2), "classification", np.array([0, 1, 2]))
    assert "at most 1" not in str(caught.value)
    with pytest.raises(TrainingDataError, match=r"too few for 3 folds: lower the number of folds to at most 2"):
        make_folds(ValidationPlan("random", 3), "regression", np.array([0.5, 1.5]))


def test_archive_with_a_top_folder_is_opened(tmp_path, monkeypatch):
    """Item 13: a .drpk made by zipping the package folder itself opens; one without a package is refused and its
    extracted copy removed."""
    from deepraster.models.errors import ModelPackageError
    from deepraster.models.sources import open_model

    monkeypatch.setenv("DEEPRASTER_CACHE_DIR", str(tmp_path / "cache"))
    archive = tmp_path / "nested.drpk"
    with zipfile.ZipFile(archive, "w") as z:
        for f in MODEL_4B_L1C.iterdir():
            z.write(f, f"ukis/{f.name}")
    assert open_model(archive).name == "ukis-csmask-4b-l1c"
    stray = tmp_path / "stray.drpk"
    with zipfile.ZipFile(stray, "w") as z:
        z.writestr("docs/readme.txt", "x" * 1000)
        z.writestr("other/readme.txt", "y")
    with pytest.raises(ModelPackageError, match="holds no model.json at its top level or in a single top folder"):
        open_model(stray)
    assert len(list((tmp_path / "cache").iterdir())) == 1  # the good one; the stray copy is gone


def test_terminal_codes_stripped_from_weights_errors(tmp_path):
    """Item 20: torch's "Weights only load failed" message carries ANSI codes; the user's message does not."""
    import torch
    from deepraster.models.errors import WeightsError
    from deepraster.models.weights import plain_error, read_state_dict

    assert plain_error(RuntimeError("\x1b[1mWeights only\x1b[0m load \x1b[31mfailed\x1b[0m")) == \
        "Weights only load failed"
    torch.save(torch.nn.Conv2d(4, 3, 1), tmp_path / "m.pt")
    with pytest.raises(WeightsError) as caught:
        read_state_dict(tmp_path / "m.pt")
    assert "\x1b" not in str(caught.value) and caught.value.needs_trust


# ------------------------------------------------------------------------------------------------ QGIS
def gcp_raster(path, bands: int, rows: int, cols: int, descriptions=()):
    """A raster georeferenced by four GCPs only (corners in UTM 33N), as a scanned map or a level-1 scene is."""
    from osgeo import gdal, osr

    write_raster(path, smooth_field(bands, rows, cols).astype(np.float32), descriptions=descriptions)
    ds = gdal.Open(str(path), gdal.GA_Update)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    gcps = [gdal.GCP(500000 + 10 * c, 5800000 - 10 * r, 0, c, r) for c, r in ((0, 0), (cols, 0), (0, rows),
                                                                                (cols, rows))]
    ds.SetGeoTransform((0, 1, 0, 0, 0, 1))
    ds.SetGCPs(gcps, srs.ExportToWkt())
    ds = None
    return path


def test_gcp_raster_keeps_its_gcps_with_a_warning(world, tmp_path):
    """Item 9: the output of a GCP-only raster has the same GCPs (shifted to an extent's pixels) and the log says
    the pixels are not warped."""
    from osgeo import gdal

    raster = gcp_raster(tmp_path / "gcp.tif", 6, 40, 60, S2_6)
    source = gdal.Open(str(raster))
    assert source.GetGeoTransform(can_return_null=True) is None and source.GetGCPCount() == 4
    feedback = recording_feedback()
    run("cluster_pixels", {"INPUT": str(raster), "N_CLUSTERS": 3, "SAMPLE_SIZE": 500,
                           "OUTPUT": str(tmp_path / "k.tif")}, feedback)
    out = gdal.Open(str(tmp_path / "k.tif"))
    assert out.GetGCPCount() == 4 and out.GetGeoTransform(can_return_null=True) is None
    assert [(g.GCPPixel, g.GCPLine, g.GCPX) for g in out.GetGCPs()] == \
        [(g.GCPPixel, g.GCPLine, g.GCPX) for g in source.GetGCPs()]
    assert "EPSG\",\"32633" in out.GetGCPProjection()
    assert any("ground control points only" in m and "not warped" in m for m in feedback.messages)


def test_big_tile_on_a_small_raster_is_clamped(world, tmp_path):
    """Item 15: TILE_SIZE=8192 on a 64² raster runs with the package's 256 px tile (it used to pad to 8192² and
    die with "can't allocate memory")."""
    raster = write_raster(tmp_path / "r.tif", smooth_field(4, 64, 64), descriptions=S2_4)
    feedback = recording_feedback()
    start = time.perf_counter()
    run("classify_pixels", {"INPUT": str(raster), "MODEL": str(MODEL_4B_L1C), "TILE_SIZE": 8192,
                            "OUTPUT_CLASSES": str(tmp_path / "c.tif")}, feedback)
    assert time.perf_counter() - start < 60
    assert any("Tile size 8192 px is larger than the 64 × 64 px to process: using 256 px" in m
               for m in feedback.messages)


def test_package_without_checksum_warns(world, tmp_path):
    """Item 18: weights without a recorded checksum run with a warning; Inspect says so."""
    import shutil

    package = tmp_path / "pkg"
    shutil.copytree(MODEL_4B_L1C, package)
    description = json.loads((package / "model.json").read_text())
    del description["weights"]["sha256"]
    (package / "model.json").write_text(json.dumps(description))
    feedback = recording_feedback()
    run("classify_pixels", {"INPUT": world["r4"], "MODEL": str(package), "OUTPUT_CLASSES": str(tmp_path / "c.tif")},
        feedback)
    assert any("records no checksum (sha256) of its weights" in m for m in feedback.messages)
    result = run("inspect_package", {"MODEL": str(package), "DRY_RUN": False, "OUTPUT_HTML": str(tmp_path / "r.html"),
                                     "OUTPUT_JSON": str(tmp_path / "r.json")})
    report = json.loads((tmp_path / "r.json").read_text())
    assert result["STATUS"] == "valid" and report["summary"] == "valid, but weights not checksummed"
    assert "valid, but weights not checksummed" in (tmp_path / "r.html").read_text()


def test_cluster_small_raster_uses_every_pixel(world, tmp_path):
    """Item 17: the default sample size (20 000) on a 5 400-pixel raster fits on all of them, with a line in the log."""
    feedback = recording_feedback()
    run("cluster_pixels", {"INPUT": world["r6"], "N_CLUSTERS": 3, "OUTPUT": str(tmp_path / "k.tif")}, feedback)
    assert any("Only 5400 valid pixels, fewer than the sample size of 20000: all of them are used" in m
               for m in feedback.messages)


def test_pixel_sample_of_a_large_raster_reads_a_grid_of_windows(tmp_path):
    """A large raster without overviews is sampled from 8 × 8 small windows, not one decimated read that decodes
    every block: a VRT whose strip between the windows comes from a missing file is sampled without error, and the
    sample has about size² pixels."""
    import numpy as np
    from deepraster.tiling.source import RasterSource, grid_windows, sample_pixels
    from helpers import write_raster

    rows, cols = np.mgrid[0:2048, 0:2048]
    write_raster(tmp_path / "image.tif", ((rows + cols) % 200 + 1)[None].astype(np.uint16), nodata=0)
    windows = grid_windows(RasterSource.open(str(tmp_path / "image.tif")).window, 8, 32)
    assert len(windows) == 64 and len({(w.col_off, w.row_off) for w in windows}) == 64
    band = ('<SimpleSource><SourceFilename relativeToVRT="1">{}</SourceFilename><SourceBand>1</SourceBand>'
            '<SrcRect xOff="{c}" yOff="{r}" xSize="{w}" ySize="{h}"/><DstRect xOff="{c}" yOff="{r}" xSize="{w}" '
            'ySize="{h}"/></SimpleSource>')
    sources = "".join(band.format("image.tif", c=w.col_off, r=w.row_off, w=w.width, h=w.height) for w in windows)
    sources += band.format("missing.tif", c=0, r=0, w=2048, h=4)  # a strip no window touches
    vrt = tmp_path / "sparse.vrt"
    vrt.write_text('<VRTDataset rasterXSize="2048" rasterYSize="2048"><VRTRasterBand dataType="UInt16" band="1">'
                   '<NoDataValue>0</NoDataValue>' + sources + "</VRTRasterBand></VRTDataset>")
    sample = sample_pixels(RasterSource.open(str(vrt)), [1], size=256)
    assert sample.shape == (1, 64 * 32 * 32) and (sample > 0).all()


def test_raster_without_georeferencing_overlays_and_takes_canvas_extents(world, tmp_path):
    """A raster without a geotransform is read the way QGIS draws it (rows going down from y = 0): outputs overlay
    it, and an extent drawn on the canvas (negative y) selects the pixels seen there. A GCP-only raster refuses an
    extent in words (it said "does not overlap")."""
    from osgeo import gdal
    from qgis.core import QgsProcessingException

    data = smooth_field(6, 40, 60).astype(np.float32)
    plain = tmp_path / "plain.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(plain), 60, 40, 6, gdal.GDT_Float32)
    ds.WriteArray(data)
    ds = None
    assert gdal.Open(str(plain)).GetGeoTransform(can_return_null=True) is None
    params = {"INPUT": str(plain), "N_CLUSTERS": 3, "SAMPLE_SIZE": 500}
    run("cluster_pixels", {**params, "OUTPUT": str(tmp_path / "all.tif")})
    assert gdal.Open(str(tmp_path / "all.tif")).GetGeoTransform() == (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    from deepraster.tiling.collection_report import mosaic_problem
    from deepraster.tiling.source import RasterSource

    assert not RasterSource.open(str(tmp_path / "all.tif")).georeferenced  # still only numbered pixels
    assert "has no geotransform" in mosaic_problem([str(tmp_path / "all.tif"), str(plain)])
    run("cluster_pixels", {**params, "EXTENT": "10,30,-20,-5", "OUTPUT": str(tmp_path / "part.tif")})
    part = gdal.Open(str(tmp_path / "part.tif"))
    assert (part.RasterXSize, part.RasterYSize) == (20, 15)
    assert part.GetGeoTransform() == (10.0, 1.0, 0.0, -5.0, 0.0, -1.0)  # columns 10–29, rows 5–19
    raster = gcp_raster(tmp_path / "gcp.tif", 6, 40, 60, S2_6)
    with pytest.raises(QgsProcessingException, match="ground control points only: a processing extent cannot"):
        run("cluster_pixels", {**params, "INPUT": str(raster), "EXTENT": "500100,500300,5799700,5799900",
                               "OUTPUT": str(tmp_path / "g.tif")})
