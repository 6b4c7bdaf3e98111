"""Export training data (deepraster:export_training_data) through Processing: the real 10 m Sentinel-2 scene with the
real OSM land-use polygons, small generated scenes for the edge cases and bad inputs, and the chip-folder reader on
our export and on a hand-built Esri Classified_Tiles folder."""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import DATA, recording_feedback, utm_to_wgs84, write_raster, write_vector
from osgeo import gdal, ogr

OSM = DATA / "s2" / "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg"
GT = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)
SIZE = 192  # generated scene: 192 × 192 px, chips of 32 px, blocks of 3 chips (960 m) → 2 × 2 blocks


def run(params: dict, feedback=None) -> dict:
    import processing

    return processing.run("deepraster:export_training_data", params, feedback=feedback or recording_feedback())


def rect(c0: float, r0: float, c1: float, r1: float) -> str:
    """A rectangle from pixel column/row bounds of the generated scene, as WKT in EPSG:32633."""
    x0, x1, y0, y1 = GT[0] + c0 * 10, GT[0] + c1 * 10, GT[3] - r0 * 10, GT[3] - r1 * 10
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


def burn(raster: Path, vector: Path, field: str, values: dict | None = None) -> np.ndarray:
    """A direct rasterisation of a whole label layer on the raster's grid (feature order; 255 = unlabelled)."""
    ds = gdal.Open(str(raster))
    mem = gdal.GetDriverByName("MEM").Create("", ds.RasterXSize, ds.RasterYSize, 1, gdal.GDT_Byte)
    mem.SetGeoTransform(ds.GetGeoTransform())
    mem.SetProjection(ds.GetProjection())
    mem.GetRasterBand(1).Fill(255)
    vector_ds = ogr.Open(str(vector))  # kept: a layer dies with its dataset
    src = vector_ds.GetLayer(0)
    work_ds = ogr.GetDriverByName("Memory").CreateDataSource("w")
    work = work_ds.CreateLayer("w", src.GetSpatialRef())
    work.CreateField(ogr.FieldDefn("v", ogr.OFTInteger))
    for feature in src:
        out = ogr.Feature(work.GetLayerDefn())
        out.SetGeometry(feature.GetGeometryRef())
        raw = feature.GetField(field)
        out.SetField("v", values[raw] if values else int(raw))
        work.CreateFeature(out)
    gdal.RasterizeLayer(mem, [1], work, options=["ATTRIBUTE=v"])
    return mem.GetRasterBand(1).ReadAsArray()


@pytest.fixture(scope="module")
def real_export(qgis_app, s2_10m, tmp_path_factory):
    """The 10 m scene (1536 × 768 px, 10 bands) and the 604 OSM polygons: chips of 64 px, blocks of 2560 m."""
    out = tmp_path_factory.mktemp("real") / "chips"
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run({"INPUT": str(s2_10m), "LABELS": str(OSM), "LABEL_FIELD": "fclass", "CHIP_SIZE": 64,
                  "BLOCK_SIZE": 2560, "SEED": 0, "OUTPUT": str(out)})
    seconds, peak = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    print(f"\nreal scene: {result['TRAIN_CHIPS']} training + {result['VALIDATION_CHIPS']} validation chips in "
          f"{seconds:.2f} s; peak RSS {peak / 1024:.0f} MiB (+{(peak - before) / 1024:.0f} MiB); pixel counts "
          f"{manifest['pixel_counts']}")
    return out, result, manifest


def test_real_scene_chips_in_place_and_labels_exact(real_export, s2_10m):
    out, result, manifest = real_export
    assert result["OUTPUT"] == str(out) and result["TRAIN_CHIPS"] > 50 and result["VALIDATION_CHIPS"] > 5
    names = sorted(c["name"] for c in manifest["classes"])
    assert names == ["farm", "forest", "grass", "meadow", "residential", "scrub", "water", "wetland"]
    values = {c["name"]: c["value"] for c in manifest["classes"]}
    assert [values[n] for n in names] == list(range(8))  # names sorted → 0..n-1
    truth = burn(s2_10m, OSM, "fclass", values)
    gt = gdal.Open(str(s2_10m)).GetGeoTransform()
    for chip in manifest["chips"]:
        col, row, w, h = chip["window"]
        image, label = gdal.Open(str(out / chip["image"])), gdal.Open(str(out / chip["label"]))
        expected = (gt[0] + col * gt[1], gt[1], 0.0, gt[3] + row * gt[5], 0.0, gt[5])
        assert image.GetGeoTransform() == pytest.approx(expected) and label.GetGeoTransform() == image.GetGeoTransform()
        assert (image.RasterXSize, image.RasterCount, label.GetRasterBand(1).DataType) == (64, 10, gdal.GDT_Byte)
        np.testing.assert_array_equal(label.ReadAsArray(), truth[row:row + h, col:col + w])
        assert np.count_nonzero(label.ReadAsArray() != 255) >= 0.05 * w * h
    first = gdal.Open(str(out / manifest["chips"][0]["image"]))
    assert first.GetMetadata("IMAGE_STRUCTURE").get("COMPRESSION") == "DEFLATE"
    assert first.GetRasterBand(1).GetDescription() == "B02"
    assert [b["description"] for b in manifest["bands"]][:4] == ["B02", "B03", "B04", "B05"]


def test_real_scene_split_has_a_one_chip_gap(real_export):
    _, _, manifest = real_export
    chips = manifest["chips"]
    windows = {(c["window"][0], c["window"][1]) for c in chips}
    assert len(windows) == len(chips)  # no chip twice, so none in both splits
    train = np.array([c["window"][:2] for c in chips if c["split"] == "train"])
    val = np.array([c["window"][:2] for c in chips if c["split"] == "validation"])
    gap_x = np.maximum(val[None, :, 0] - (train[:, None, 0] + 64), train[:, None, 0] - (val[None, :, 0] + 64))
    gap_y = np.maximum(val[None, :, 1] - (train[:, None, 1] + 64), train[:, None, 1] - (val[None, :, 1] + 64))
    assert np.maximum(gap_x, gap_y).min() >= 64  # at least one chip between any training and validation chip
    assert manifest["split"]["block_size"] == 2560 and manifest["split"]["gap_chips"] == 1


def test_real_scene_statistics_from_training_chips_only(real_export):
    out, _, manifest = real_export
    by_split: dict[str, list[np.ndarray]] = {"train": [], "validation": []}
    counts: dict[str, np.ndarray] = {s: np.zeros(256, np.int64) for s in by_split}
    for chip in manifest["chips"]:
        by_split[chip["split"]].append(gdal.Open(str(out / chip["image"])).ReadAsArray().reshape(10, -1))
        counts[chip["split"]] += np.bincount(gdal.Open(str(out / chip["label"])).ReadAsArray().ravel(), minlength=256)
    train = np.concatenate(by_split["train"], axis=1).astype(np.float64)
    everything = np.concatenate([train, *by_split["validation"]], axis=1).astype(np.float64)
    stats = manifest["statistics"]
    assert stats["computed_from"] == "train" and stats["pixels"] == train.shape[1]
    np.testing.assert_allclose(stats["mean"], train.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(stats["std"], train.std(axis=1), rtol=1e-6)
    assert not np.allclose(stats["mean"], everything.mean(axis=1), rtol=1e-6)
    for split in by_split:
        assert manifest["pixel_counts"][split] == {str(v): int(counts[split][v]) for v in range(8)}


def test_real_scene_reads_back_in_both_layouts(real_export, tmp_path):
    from deepraster.training.chips import read_chip_folder

    out, _, manifest = real_export
    folder = read_chip_folder(out)
    assert folder.layout == "deepraster" and folder.ignore_value == 255 and folder.chip_size == 64
    assert [(c.image, c.label, c.split) for c in folder.chips] == \
        [(out / c["image"], out / c["label"], c["split"]) for c in manifest["chips"]]
    assert folder.classes == manifest["classes"] and folder.mean == manifest["statistics"]["mean"]
    for name in ("esri_model_definition.emd", "esri_accumulated_stats.json", "map.txt", "stats.txt"):
        assert (out / name).is_file(), name
    for chip in manifest["chips"]:
        assert all((out / chip[k]).with_suffix(".tfw").is_file() for k in ("image", "label"))
    stats = json.loads((out / "esri_accumulated_stats.json").read_text(encoding="utf-8"))
    assert stats["MetaDataMode"] == "Classified_Tiles" and stats["NumTiles"] == len(manifest["chips"])
    esri_copy = tmp_path / "esri"
    shutil.copytree(out, esri_copy)
    (esri_copy / "manifest.json").unlink()  # what an ArcGIS user gets: the Esri files only
    esri = read_chip_folder(esri_copy)
    assert esri.layout == "esri" and len(esri.chips) == len(folder.chips) and {c.split for c in esri.chips} == {None}
    assert esri.classes == folder.classes and esri.chip_size == 64
    np.testing.assert_allclose(esri.mean, folder.mean)


def test_reads_a_hand_built_esri_classified_tiles_folder(tmp_path):
    """Esri's layout as ArcGIS Pro writes it: images/ and labels/ of the same names with world files, classes in
    esri_model_definition.emd, map.txt with Windows separators."""
    from deepraster.training.chips import read_chip_folder

    for sub in ("images", "labels"):
        (tmp_path / sub).mkdir()
    lines = []
    for i in range(3):
        name = f"{i:09d}.tif"
        write_raster(tmp_path / "images" / name, np.full((3, 16, 16), i, np.uint8))
        write_raster(tmp_path / "labels" / name, np.full((16, 16), 1 + i % 2, np.uint8))
        (tmp_path / "images" / f"{i:09d}.tfw").write_text("10\n0\n0\n-10\n500005\n5799995\n", encoding="utf-8")
        lines.append(f"images\\{name} labels\\{name}")
    (tmp_path / "map.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    emd = {"ModelType": "ImageClassification", "ImageHeight": 16, "ImageWidth": 16, "ExtractBands": [0, 1, 2],
           "Classes": [{"Value": 1, "Name": "Trees", "Color": [0, 128, 0]},
                       {"Value": 2, "Name": "Water", "Color": [0, 0, 255]}]}
    (tmp_path / "esri_model_definition.emd").write_text(json.dumps(emd), encoding="utf-8")
    (tmp_path / "esri_accumulated_stats.json").write_text(json.dumps(
        {"MetaDataMode": "Classified_Tiles", "TileSizeX": 16, "TileSizeY": 16, "NumTiles": 3}), encoding="utf-8")
    folder = read_chip_folder(tmp_path)
    assert folder.layout == "esri" and folder.chip_size == 16 and folder.mean is None
    assert [c.image.name for c in folder.chips] == ["000000000.tif", "000000001.tif", "000000002.tif"]
    assert all(c.label == tmp_path / "labels" / c.image.name for c in folder.chips)
    assert folder.classes == [{"value": 1, "name": "Trees", "color": "#008000"},
                              {"value": 2, "name": "Water", "color": "#0000ff"}]


@pytest.fixture
def scene(tmp_path):
    """A 4-band 192 × 192 px scene; label polygons: vertical stripes of 16 px, "water" and "forest" in turns."""
    rng = np.random.default_rng(1)
    raster = write_raster(tmp_path / "scene.tif", rng.integers(100, 3000, (4, SIZE, SIZE)).astype(np.uint16),
                          descriptions=("B02", "B03", "B04", "B08"))
    stripes = [rect(c, 0, c + 16, SIZE) for c in range(0, SIZE, 16)]
    names = ["water" if i % 2 else "forest" for i in range(len(stripes))]
    return raster, write_vector(tmp_path / "labels.gpkg", stripes, {"cover": names})


def small(raster, labels, out, **extra) -> dict:
    return {"INPUT": str(raster), "LABELS": str(labels), "LABEL_FIELD": "cover", "CHIP_SIZE": 32,
            "BLOCK_SIZE": 960, "VALIDATION_FRACTION": 0.25, "SEED": 3, "OUTPUT": str(out), **extra}


def test_labels_in_another_crs_repaired_and_background(qgis_app, tmp_path, scene):
    raster, _ = scene
    to_wgs84 = utm_to_wgs84()
    wkts = [rect(32 * i + 4, 32 * j + 4, 32 * i + 28, 32 * j + 28) for i in range(6) for j in range(6)]
    codes = [3 if (i + j) % 2 == 0 else 5 for i in range(6) for j in range(6)]  # a checkerboard, background around
    wkts.append("POLYGON((500970 5799030,501890 5798110,501890 5799030,500970 5798110,500970 5799030))")  # bowtie
    codes.append(3)
    moved = []
    for wkt in wkts:
        geom = ogr.CreateGeometryFromWkt(wkt)
        geom.Segmentize(20)
        geom.Transform(to_wgs84)
        moved.append(geom.ExportToWkt())
    labels = write_vector(tmp_path / "wgs84.gpkg", moved, {"code": codes}, epsg=4326)
    feedback = recording_feedback()
    out = tmp_path / "chips"
    run({**small(raster, labels, out, LABEL_FIELD="code", BACKGROUND=True, MIN_LABELLED=0.0)}, feedback)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert [c["value"] for c in manifest["classes"]] == [0, 3, 5] and manifest["background"]
    assert manifest["classes"][0]["name"] == "background"
    assert any("1 invalid geometr" in m and "repaired" in m for m in feedback.messages), feedback.messages
    utm_labels = write_vector(tmp_path / "utm.gpkg", wkts, {"code": codes})
    truth = burn(raster, utm_labels, "code")
    truth[truth == 255] = 0
    agree = []
    for chip in manifest["chips"]:
        col, row, w, h = chip["window"]
        agree.append(gdal.Open(str(out / chip["label"])).ReadAsArray() == truth[row:row + h, col:col + w])
    assert np.mean(agree) > 0.995  # reprojected there and back: only edge pixels may differ


def test_class_raster_labels_and_overwrite(qgis_app, tmp_path, scene):
    from qgis.core import QgsProcessingException

    raster, _ = scene
    classes = np.where((np.arange(SIZE) // 16) % 2 == 0, 2, 9).astype(np.uint8)[None, :].repeat(SIZE, axis=0)
    classes[:8] = 0  # nodata: unlabelled
    label_raster = write_raster(tmp_path / "classes.tif", classes, nodata=0)
    table = tmp_path / "classes.csv"
    table.write_text("value,name,colour\n2,crop,#ffff00\n9,lake,#0000ff\n", encoding="utf-8")
    out = tmp_path / "chips"
    out.mkdir()
    (out / "old.txt").write_text("older export", encoding="utf-8")
    with pytest.raises(QgsProcessingException, match="not a training data export"):  # someone's folder: kept
        run({**small(raster, "", out, LABELS=None, LABEL_FIELD=None), "LABEL_RASTER": str(label_raster),
             "CLASS_TABLE": str(table), "OVERWRITE": True})
    assert (out / "old.txt").is_file()
    (out / "manifest.json").write_text("{}", encoding="utf-8")  # an earlier export: replaced
    result = run({**small(raster, "", out, LABELS=None, LABEL_FIELD=None), "LABEL_RASTER": str(label_raster),
                  "CLASS_TABLE": str(table), "OVERWRITE": True})
    assert not (out / "old.txt").exists() and result["TRAIN_CHIPS"] > 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["classes"] == [{"value": 2, "name": "crop", "color": "#ffff00"},
                                   {"value": 9, "name": "lake", "color": "#0000ff"}]
    chip = next(c for c in manifest["chips"] if c["window"][:2] == [0, 0])
    expected = classes[:32, :32].copy()
    expected[expected == 0] = 255
    np.testing.assert_array_equal(gdal.Open(str(out / chip["label"])).ReadAsArray(), expected)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _bad_cases(tmp_path: Path, raster: Path, labels: Path) -> dict:
    far = write_vector(tmp_path / "far.gpkg", [rect(1000, 1000, 1100, 1100)], {"cover": ["water"]})
    mixed = write_vector(tmp_path / "mixed.gpkg", [rect(0, 0, 96, 192), rect(96, 0, 192, 192)],
                         {"cover": ["1", "forest"]})
    corner = write_vector(tmp_path / "corner.gpkg", [rect(0, 0, 192, 192), rect(0, 0, 20, 20)],
                          {"cover": ["field", "pond"]})
    return {
        "outside": ({"LABELS": str(far)}, "None of the 1 label polygon"),
        "no field": ({"LABEL_FIELD": "klasse"}, "is not in the label layer"),
        "mixed": ({"LABELS": str(mixed)}, "mixes class numbers and class names"),
        "chip too large": ({"CHIP_SIZE": 256}, "larger than the raster"),
        "too few chips": ({"CHIP_SIZE": 192}, "too few chips for a validation split"),
        "one block": ({"BLOCK_SIZE": 5000}, "too few blocks"),
        "class missing": ({"LABELS": str(corner)}, r"Class 1 \(pond\) has no pixel in the"),
        "not empty": ({}, "is not empty"),
    }


@pytest.mark.parametrize("case", ["outside", "no field", "mixed", "chip too large", "too few chips", "one block",
                                  "class missing", "not empty"])
def test_bad_inputs_clear_message_nothing_written(qgis_app, tmp_path, scene, case):
    from qgis.core import QgsProcessingException

    raster, labels = scene
    params, message = _bad_cases(tmp_path, raster, labels)[case]
    out = tmp_path / "chips"
    if case == "not empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine", encoding="utf-8")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(QgsProcessingException, match=message):
        run({**small(raster, labels, out), **params})
    assert sorted(os.listdir(tmp_path)) == before  # no output folder, no hidden partial folder
    if case == "not empty":
        assert os.listdir(out) == ["keep.txt"]


def test_cancel_leaves_nothing(qgis_app, tmp_path, scene):
    from qgis.core import QgsProcessingException

    raster, labels = scene
    feedback = recording_feedback()
    feedback.progressChanged.connect(lambda value: feedback.cancel() if value > 20 else None)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(QgsProcessingException, match="cancelled"):
        run(small(raster, labels, tmp_path / "chips", MIN_LABELLED=0.0), feedback)
    assert sorted(os.listdir(tmp_path)) == before


def test_extent_limits_the_chips(qgis_app, tmp_path, scene):
    raster, labels = scene
    out = tmp_path / "chips"
    extent = f"{GT[0]},{GT[0] + 1280},{GT[3] - 1280},{GT[3]} [EPSG:32633]"  # the top-left 128 × 128 px
    run(small(raster, labels, out, EXTENT=extent, BLOCK_SIZE=640, VALIDATION_FRACTION=0.5, SEED=1))
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["chips"] and all(c["window"][0] + 32 <= 128 and c["window"][1] + 32 <= 128
                                     for c in manifest["chips"])


def test_not_enough_disk_space(qgis_app, tmp_path, scene, monkeypatch):
    from deepraster.training import export
    from qgis.core import QgsProcessingException

    raster, labels = scene
    monkeypatch.setattr(export.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(QgsProcessingException, match="Not enough disk space for the chips"):
        run(small(raster, labels, tmp_path / "chips"))
    assert not (tmp_path / "chips").exists()


def test_never_overwrites_a_folder_holding_an_input(qgis_app, tmp_path, scene):
    from qgis.core import QgsProcessingException

    raster, labels = scene
    with pytest.raises(QgsProcessingException, match="holds the input"):
        run(small(raster, labels, tmp_path, OVERWRITE=True))
    assert raster.is_file() and labels.is_file()


def test_mask_polygons_keep_only_chips_wholly_inside(qgis_app, tmp_path, scene):
    """As ArcGIS's input mask: a chip is cut only where all its pixels lie inside the mask polygons."""
    from qgis.core import QgsProcessingException

    raster, labels = scene
    mask = write_vector(tmp_path / "mask.gpkg", [rect(0, 0, 176, SIZE)])
    run(small(raster, labels, tmp_path / "all"))
    run(small(raster, labels, tmp_path / "masked", MASK=str(mask)))
    every = json.loads((tmp_path / "all" / "manifest.json").read_text(encoding="utf-8"))["chips"]
    masked = json.loads((tmp_path / "masked" / "manifest.json").read_text(encoding="utf-8"))["chips"]
    assert masked and all(c["window"][0] + c["window"][2] <= 176 for c in masked)
    assert len(masked) < len(every)
    tiny = write_vector(tmp_path / "tiny.gpkg", [rect(0, 0, 20, 20)])
    with pytest.raises(QgsProcessingException, match="No 32 px chip lies wholly inside the mask"):
        run(small(raster, labels, tmp_path / "none", MASK=str(tiny)))
    assert not (tmp_path / "none").exists()
