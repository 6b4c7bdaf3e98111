"""Collections without QGIS (``tiling.collection``, ``tiling.collection_report``): finding the inputs, naming the
outputs, the output-folder and band checks, the run loop (a failure does not stop the others; cancel), the VRT
mosaic and the summary table, on rasters generated here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from deepraster.tiling.callbacks import Callbacks
from deepraster.tiling.collection import (
    BandNeed,
    band_count_note,
    check_output_folder,
    find_rasters,
    gather_inputs,
    plan_items,
    preflight,
    run_items,
    split_patterns,
    vrt_sources,
)
from deepraster.tiling.collection_report import build_mosaic, mosaic_problem, write_summary
from deepraster.tiling.errors import OutputError, RasterInputError, RunCancelled
from helpers import write_raster
from osgeo import gdal


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two 3-band rasters side by side, a 1-band one, a JPEG-2000 name, sidecars and a hidden file."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    data = np.arange(3 * 16 * 20, dtype=np.uint16).reshape(3, 16, 20)
    write_raster(root / "a.tif", data)
    write_raster(root / "b.TIF", data, geotransform=(500200.0, 10.0, 0.0, 5800000.0, 0.0, -10.0))
    write_raster(root / "sub" / "c.tif", data[:1])
    for name in ("a.tif.aux.xml", ".hidden.tif", "notes.txt", "x.jp2.partial"):
        (root / name).write_text("x")
    return root


def test_patterns_are_split_on_semicolons_commas_and_spaces():
    assert split_patterns("*.tif; *.jp2,*.vrt") == ["*.tif", "*.jp2", "*.vrt"]
    assert split_patterns("") == ["*.tif", "*.tiff"] == split_patterns(None)


def test_folder_search_skips_sidecars_and_hidden_files(folder):
    assert [p.name for p in find_rasters(folder, ["*.tif"])] == ["a.tif", "b.TIF"]  # case-insensitive
    assert [p.name for p in find_rasters(folder, ["*.tif"], recursive=True)] == ["a.tif", "b.TIF", "c.tif"]
    with pytest.raises(RasterInputError, match=r"holds no file matching \*\.jp2.*another folder or pattern"):
        find_rasters(folder, ["*.jp2"])
    with pytest.raises(RasterInputError, match="does not exist"):
        find_rasters(folder / "missing", ["*.tif"])


def test_vrt_sources_and_gathering(folder, tmp_path):
    vrt = tmp_path / "mosaic.vrt"
    gdal.BuildVRT(str(vrt), [str(folder / "a.tif"), str(folder / "b.TIF")]).FlushCache()
    assert [Path(p).name for p in vrt_sources(vrt)] == ["a.tif", "b.TIF"]
    with pytest.raises(RasterInputError, match="is not a VRT mosaic"):
        vrt_sources(folder / "a.tif")
    inputs = gather_inputs(str(folder), ["*.tif"], False, [str(folder / "sub" / "c.tif")], str(vrt))
    assert [Path(p).name for p in inputs] == ["a.tif", "b.TIF", "c.tif"]  # each file once
    with pytest.raises(RasterInputError, match="The collection is empty"):
        gather_inputs()


def test_outputs_are_named_after_their_inputs(tmp_path):
    items = plan_items(["/x/scene.tif", "/y/scene.tif", "/x/other.b.tif"], tmp_path,
                       ("OUTPUT", ".tif"), [("OUTPUT_PROBABILITIES", "probabilities", ".tif")])
    assert [i.name for i in items] == ["scene", "scene_2", "other.b"]
    assert items[1].outputs == {"OUTPUT": str(tmp_path / "scene_2.tif"),
                                "OUTPUT_PROBABILITIES": str(tmp_path / "scene_2_probabilities.tif")}
    assert items[0].main == str(tmp_path / "scene.tif")
    # a date in the name stays; one input's extra output never takes another's name, nor a report's
    series = plan_items(["/s/S2_2020.01.05.tif", "/s/S2_2020.02.05.tif", "/a/west.tif", "/b/west_probabilities.tif",
                         "/c/collection_mosaic.tif"], tmp_path, ("OUTPUT", ".tif"),
                        [("OUTPUT_PROBABILITIES", "probabilities", ".tif")], ["collection_mosaic.tif"])
    files = [Path(p).name for item in series for p in item.outputs.values()]
    assert files[:2] == ["S2_2020.01.05.tif", "S2_2020.01.05_probabilities.tif"] and len(set(files)) == len(files)
    assert "west_probabilities_2.tif" in files and "collection_mosaic.tif" not in files


def test_reports_may_not_overwrite_an_input_or_the_vrt_listing_them(tmp_path):
    """The mosaic and summary are checked like the outputs: an input named like the mosaic (it was replaced, or
    deleted when no input succeeded), and the input VRT and its sources."""
    from osgeo import gdal

    source = write_raster(tmp_path / "scene.tif", np.ones((4, 4), np.uint8))
    mosaic = tmp_path / "collection_mosaic.vrt"
    gdal.BuildVRT(str(mosaic), [str(source)]).FlushCache()
    other = tmp_path / "out"
    items = plan_items([str(mosaic)], tmp_path, ("OUTPUT", ".tif"), [], ["collection_mosaic.vrt"])
    with pytest.raises(OutputError, match="collection_mosaic.vrt would overwrite the input"):
        check_output_folder(tmp_path, items, reports=["collection_mosaic.vrt"])
    listed = tmp_path / "list.vrt"
    gdal.BuildVRT(str(listed), [str(source)]).FlushCache()
    items = plan_items([str(source)], other, ("OUTPUT", ".tif"))
    check_output_folder(other, items, reports=["collection_mosaic.vrt"], sources=[str(listed)])
    with pytest.raises(OutputError, match="list.vrt would overwrite the input"):
        check_output_folder(tmp_path, plan_items([str(source)], other, ("OUTPUT", ".tif")), reports=["list.vrt"],
                            sources=[str(listed)])


def test_output_folder_that_would_overwrite_or_feed_the_inputs_is_refused(folder, tmp_path):
    inputs = gather_inputs(str(folder), ["*.tif"], True)
    with pytest.raises(OutputError, match=r"would overwrite the input .*a\.tif.*Choose another output folder"):
        check_output_folder(folder, plan_items(inputs, folder, ("OUTPUT", ".tif")), str(folder), ["*.tif"])
    inside = folder / "out"
    items = plan_items(inputs, inside, ("OUTPUT", ".tif"))
    check_output_folder(inside, items, str(folder), ["*.tif"], recursive=False)  # not searched: fine
    with pytest.raises(OutputError, match="inside the input folder .* next run over the folder would take them"):
        check_output_folder(inside, items, str(folder), ["*.tif"], recursive=True)
    check_output_folder(inside, items, str(folder), ["*.jp2"], recursive=True)  # outputs do not match: fine
    with pytest.raises(OutputError, match="is a file"):
        check_output_folder(folder / "notes.txt", items)


def test_preflight_reports_unreadable_rasters_and_missing_bands(folder):
    broken, few, enough = plan_items([str(folder / "notes.txt"), str(folder / "sub" / "c.tif"),
                                      str(folder / "a.tif")], folder / "out", ("OUTPUT", ".tif"))
    need = BandNeed(3, False, "the model m (B02, B03, B04)")
    for item in (broken, few, enough):
        preflight(item, need)
    assert broken.status == "failed" and "Cannot open" in broken.message
    assert few.status == "failed" and few.band_count == 1
    assert few.message == ("it has 1 band; the model m (B02, B03, B04) needs 3. Remove it from the collection, "
                           "or give the band numbers to use.")
    assert enough.status == "pending" and enough.band_count == 3
    preflight(enough, BandNeed(2, True, "the saved model k.joblib"))
    assert "needs exactly 2" in enough.message
    assert band_count_note([few, enough]) == ("The rasters of the collection have different band counts: 1 (c.tif); "
                                              "3 (a.tif).")
    assert band_count_note([enough]) is None


def test_a_failure_is_recorded_and_the_others_still_run(tmp_path):
    items = plan_items(["a.tif", "b.tif", "c.tif"], tmp_path, ("OUTPUT", ".tif"))
    items[0].status, items[0].message = "failed", "left out"
    ran, warnings, progress = [], [], []

    def run_one(item, step):
        ran.append((item.name, step))
        if item.name == "b":
            raise ValueError("band 7 does not exist")

    run_items(items, run_one, Callbacks(warning=warnings.append, progress=progress.append))
    assert ran == [("b", 0), ("c", 1)]
    assert [i.status for i in items] == ["failed", "failed", "ok"]
    assert items[1].message == "band 7 does not exist" and warnings == ["b.tif failed: band 7 does not exist"]
    assert progress == [0.5, 1.0]


def test_cancel_stops_the_loop_and_marks_the_rest(tmp_path):
    items = plan_items(["a.tif", "b.tif", "c.tif"], tmp_path, ("OUTPUT", ".tif"))
    cancelled = []

    def run_one(item, step):
        if item.name == "b":
            cancelled.append(True)
            raise RunCancelled("The run was cancelled; no output was written.")

    run_items(items, run_one, Callbacks(is_cancelled=lambda: bool(cancelled)))
    assert [i.status for i in items] == ["ok", "cancelled", "cancelled"]
    assert items[2].message == "Not run: the collection was cancelled."


def test_mosaic_of_outputs_that_fit_together(folder, tmp_path):
    target, note = build_mosaic([str(folder / "a.tif"), str(folder / "b.TIF")], tmp_path / "m.vrt")
    assert target == tmp_path / "m.vrt" and note == "Mosaic of 2 outputs: m.vrt."
    ds = gdal.Open(str(target))
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (40, 16, 3)
    assert not list(tmp_path.glob(".*partial*"))


def test_mosaic_keeps_band_names_and_metadata(tmp_path):
    data = np.ones((2, 8, 8), np.float32)
    first = write_raster(tmp_path / "a.tif", data, descriptions=("feature 1", "feature 2"))
    ds = gdal.Open(str(first), gdal.GA_Update)
    ds.SetMetadataItem("deepraster_encoder", "resnet18")
    ds = None
    second = write_raster(tmp_path / "b.tif", data, geotransform=(500080.0, 10.0, 0.0, 5800000.0, 0.0, -10.0),
                          descriptions=("feature 1", "feature 2"))
    target, _ = build_mosaic([str(first), str(second)], tmp_path / "m.vrt")
    mosaic = gdal.Open(str(target))
    assert [mosaic.GetRasterBand(i).GetDescription() for i in (1, 2)] == ["feature 1", "feature 2"]
    assert mosaic.GetMetadataItem("deepraster_encoder") == "resnet18"


def test_no_mosaic_of_outputs_that_do_not_fit(folder, tmp_path):
    a = str(folder / "a.tif")
    other_crs = write_raster(tmp_path / "utm32.tif", np.zeros((3, 8, 8), np.uint16), epsg=32632)
    one_band = str(folder / "sub" / "c.tif")
    float_bands = write_raster(tmp_path / "float.tif", np.zeros((3, 8, 8), np.float32))
    assert mosaic_problem([]) == "No output was written, so there is no mosaic."
    assert "different CRS (EPSG:32633 for a.tif, EPSG:32632 for utm32.tif)" in mosaic_problem([a, str(other_crs)])
    assert "different band layouts (3 × UInt16 in a.tif, 1 × UInt16 in c.tif)" in mosaic_problem([a, one_band])
    assert "Float32 in float.tif" in mosaic_problem([a, str(float_bands)])
    assert build_mosaic([a, str(other_crs)], tmp_path / "m.vrt")[0] is None
    assert not (tmp_path / "m.vrt").exists()


def test_mosaic_of_different_pixel_sizes_takes_the_finest(folder, tmp_path):
    coarse = write_raster(tmp_path / "coarse.tif", np.zeros((3, 8, 10), np.uint16),
                          geotransform=(500400.0, 20.0, 0.0, 5800000.0, 0.0, -20.0))
    target, note = build_mosaic([str(folder / "a.tif"), str(coarse)], tmp_path / "m.vrt")
    assert "different pixel sizes" in note and gdal.Open(str(target)).GetGeoTransform()[1] == 10.0


def test_summary_table(tmp_path):
    items = plan_items(["/in/a.tif", "/in/b.tif"], tmp_path, ("OUTPUT", ".tif"))
    items[0].status, items[0].seconds = "ok", 1.5
    items[1].status, items[1].message = "failed", 'has "3" bands, not 6'
    csv_path, json_path = write_summary(items, tmp_path / "s.csv", tmp_path / "s.json", {"algorithm": "x"})
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "input,status,seconds,output,message"
    assert lines[1] == f"/in/a.tif,ok,1.5,{tmp_path / 'a.tif'},"
    assert lines[2] == '/in/b.tif,failed,0.0,,"has ""3"" bands, not 6"'
    document = json.loads(json_path.read_text())
    assert document["algorithm"] == "x" and document["counts"] == {"inputs": 2, "ok": 1, "failed": 1,
                                                                   "cancelled": 0}
    assert document["items"][0]["outputs"] == {"OUTPUT": str(tmp_path / "a.tif")}


def test_an_earlier_mosaic_goes_when_there_is_none_now(folder, tmp_path):
    from deepraster.tiling.transaction import run_transaction

    target = tmp_path / "m.vrt"
    build_mosaic([str(folder / "a.tif")], target)
    assert target.is_file()
    with run_transaction():
        assert build_mosaic([], target) == (None, "No output was written, so there is no mosaic. The mosaic of an "
                                                  "earlier run (m.vrt) was removed.")
        assert target.is_file()  # until the run ends
    assert not target.exists()
