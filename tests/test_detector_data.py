"""Object training data: the export (PASCAL VOC, COCO, Esri PASCAL_VOC_rectangles and KITTI_rectangles) round trip
with exact boxes, clipping and the least visible fraction, the spatial split with its one-chip gap; a plain VOC
folder of images of other sizes read back and cut into samples; box augmentation equal to the image's; average
precision on cases worked by hand; bad inputs with clear messages and nothing written."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from deepraster.training.errors import TrainingDataError
from deepraster.training.object_chips import read_object_folder
from deepraster.training.object_export import ObjectExportRequest, export_object_training_data
from helpers import recording_feedback, write_raster, write_vector
from osgeo import gdal, ogr

GT = (500000.0, 0.5, 0.0, 5800000.0, 0.0, -0.5)
WIDTH, HEIGHT, CHIP = 256, 192, 32


def polygon(x1: float, y1: float, x2: float, y2: float) -> str:
    """A rectangle given in raster pixels, as WKT in map units (a diamond inside it would give the same box)."""
    a, b = GT[0] + x1 * GT[1], GT[0] + x2 * GT[1]
    c, d = GT[3] + y1 * GT[5], GT[3] + y2 * GT[5]
    return f"POLYGON(({a} {c},{b} {c},{b} {d},{a} {d},{a} {c}))"


def truth_boxes(seed: int = 0) -> list[tuple[float, float, float, float, str]]:
    """Boxes on a grid, many straddling chip edges; quarter-pixel corners (exact in two decimals)."""
    rng = np.random.default_rng(seed)
    boxes = []
    for y in range(4, HEIGHT - 16, 23):
        for x in range(6, WIDTH - 16, 29):
            w, h = rng.integers(4, 12, 2)
            dx, dy = rng.integers(0, 4, 2) / 4
            boxes.append((x + dx, y + dy, x + dx + w, y + dy + h, "car" if (x + y) % 2 else "boat"))
    return boxes


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("objects")
    data = np.random.default_rng(1).integers(0, 255, (3, HEIGHT, WIDTH), dtype=np.uint8)
    raster = write_raster(root / "scene.tif", data, geotransform=GT, descriptions=("red", "green", "blue"))
    return raster, truth_boxes()


def features(boxes) -> list[tuple[bytes, object]]:
    return [(ogr.CreateGeometryFromWkt(polygon(*b[:4])).ExportToWkb(), b[4]) for b in boxes]


def expected_in(window: list[int], boxes, min_visible: float) -> list[tuple]:
    """The boxes a chip keeps, clipped, in chip pixels, worked out box by box."""
    c, r, w, h = window
    out = []
    for x1, y1, x2, y2, name in boxes:
        cx1, cy1, cx2, cy2 = max(x1, c), max(y1, r), min(x2, c + w), min(y2, r + h)
        inner = max(cx2 - cx1, 0) * max(cy2 - cy1, 0)
        if inner > 0 and inner >= min_visible * (x2 - x1) * (y2 - y1):
            out.append((cx1 - c, cy1 - r, cx2 - c, cy2 - r, name))
    return sorted(out)


def test_export_round_trip_exact_boxes_coco_esri_and_split(scene, tmp_path):
    raster, boxes = scene
    out = tmp_path / "chips"
    result = export_object_training_data(ObjectExportRequest(str(raster), str(out), features(boxes), chip_size=CHIP,
                                                             min_visible=0.4, block_size=48, seed=2))
    manifest = json.loads((out / "manifest.json").read_text())
    folder = read_object_folder(out)
    names = {c["value"]: c["name"] for c in folder.classes}
    assert [c["name"] for c in folder.classes] == ["boat", "car"] and folder.layout == "deepraster"
    assert len(folder.images) == len(manifest["chips"]) == sum(result.chips.values())
    truncated = 0
    for item, chip in zip(folder.images, manifest["chips"], strict=True):
        got = sorted((*map(float, b), names[int(v)]) for b, v in zip(item.boxes, item.values, strict=True))
        assert got == expected_in(chip["window"], boxes, 0.4), chip
        assert item.split == chip["split"] and chip["boxes"] == len(got) > 0
        ds = gdal.Open(str(item.image))
        assert ds.GetGeoTransform() == (GT[0] + chip["window"][0] * GT[1], GT[1], 0.0,
                                        GT[3] + chip["window"][1] * GT[5], 0.0, GT[5])
        truncated += sum(e.text == "1" for e in ET.parse(out / chip["label"]).iter("truncated"))
    assert truncated > 0  # some boxes were cut by chip edges
    for split, name in (("train", "coco_train.json"), ("validation", "coco_validation.json")):
        coco = json.loads((out / name).read_text())
        chips = [c for c in manifest["chips"] if c["split"] == split]
        assert [i["file_name"] for i in coco["images"]] == [c["image"] for c in chips]
        assert len(coco["annotations"]) == sum(c["boxes"] for c in chips) == sum(result.boxes[split].values())
        first = coco["annotations"][0]
        image = next(i for i in folder.images if str(i.image).endswith(coco["images"][first["image_id"] - 1]
                                                                          ["file_name"]))
        x1, y1, x2, y2 = image.boxes[0]
        assert first["bbox"] == [x1, y1, x2 - x1, y2 - y1] and first["category_id"] == int(image.values[0])
    emd = json.loads((out / "esri_model_definition.emd").read_text())
    assert emd["ModelType"] == "ObjectDetection" and emd["MetaDataMode"] == "PASCAL_VOC_rectangles"
    esri = read_object_folder_without_manifest(out, tmp_path)
    assert esri.layout == "esri" and len(esri.images) == len(folder.images)
    assert all(np.array_equal(a.boxes, b.boxes) for a, b in zip(esri.images, folder.images, strict=True))
    windows = {s: [c["window"] for c in manifest["chips"] if c["split"] == s] for s in ("train", "validation")}
    for t in windows["train"]:  # a gap of at least one chip between the splits
        for v in windows["validation"]:
            assert abs(t[0] - v[0]) >= 2 * CHIP or abs(t[1] - v[1]) >= 2 * CHIP


def read_object_folder_without_manifest(folder: Path, tmp_path: Path):
    """The same folder read as Esri's PASCAL_VOC_rectangles (a copy without manifest.json)."""
    import shutil

    copy = tmp_path / "esri"
    shutil.copytree(folder, copy)
    (copy / "manifest.json").unlink()
    return read_object_folder(copy)


def test_kitti_rectangles_layout_reads_back_the_same_boxes(scene, tmp_path):
    """Label format KITTI_rectangles: labels/*.txt (15 fields per line, class names without spaces), map.txt and
    the .emd point to them, and the folder (ours and read as Esri's) gives the boxes of the VOC export."""
    raster, boxes = scene
    voc, kitti = tmp_path / "voc", tmp_path / "kitti"
    for out, label_format in ((voc, "PASCAL_VOC_rectangles"), (kitti, "KITTI_rectangles")):
        export_object_training_data(ObjectExportRequest(str(raster), str(out), features(boxes), chip_size=CHIP,
                                                        min_visible=0.4, block_size=48, seed=2,
                                                        label_format=label_format))
    assert not list((kitti / "labels").glob("*.xml")) and list((kitti / "labels").glob("*.txt"))
    first = sorted((kitti / "labels").glob("*.txt"))[0].read_text().splitlines()[0].split()
    assert len(first) == 15 and first[0] in ("boat", "car") and first[1] in ("0", "1")
    assert all(line.split()[1].endswith(".txt") for line in (kitti / "map.txt").read_text().splitlines())
    assert json.loads((kitti / "esri_model_definition.emd").read_text())["MetaDataMode"] == "KITTI_rectangles"
    expected = read_object_folder(voc)
    for folder in (read_object_folder(kitti), read_object_folder_without_manifest(kitti, tmp_path)):
        assert len(folder.images) == len(expected.images)
        for a, b in zip(folder.images, expected.images, strict=True):
            assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.values, b.values)
    with pytest.raises(TrainingDataError, match="Unknown label format 'YOLO'"):
        export_object_training_data(ObjectExportRequest(str(raster), str(tmp_path / "x"), features(boxes),
                                                        chip_size=CHIP, label_format="YOLO"))
    assert not (tmp_path / "x").exists()


def test_kitti_lines_written_and_read(tmp_path):
    from deepraster.training.errors import ChipFolderError
    from deepraster.training.kitti import read_kitti, write_kitti

    path = tmp_path / "a.txt"
    write_kitti(path, np.array([[1.25, 2, 10.5, 12], [0, 0, 3, 4]]), ["dead tree", "car"], [True, False])
    assert path.read_text().splitlines() == ["dead_tree 1 0 0 1.25 2 10.5 12 0 0 0 0 0 0 0",
                                             "car 0 0 0 0 0 3 4 0 0 0 0 0 0 0"]
    boxes, names = read_kitti(path)
    assert names == ["dead_tree", "car"] and boxes.tolist() == [[1.25, 2, 10.5, 12], [0, 0, 3, 4]]
    path.write_text("car 0 0 0 5 5 5 9 0 0 0 0 0 0 0\n")
    with pytest.raises(ChipFolderError, match="has no area"):
        read_kitti(path)
    path.write_text("car 0 0\n")
    with pytest.raises(ChipFolderError, match="at least 7 numbers"):
        read_kitti(path)


def test_keep_empty_and_min_visible(scene, tmp_path):
    raster, boxes = scene
    boxes = boxes[::2]  # chips without objects among them
    full = export_object_training_data(ObjectExportRequest(str(raster), str(tmp_path / "a"), features(boxes),
                                                           chip_size=CHIP, min_visible=1.0, keep_empty=True,
                                                           block_size=48, seed=1))
    half = export_object_training_data(ObjectExportRequest(str(raster), str(tmp_path / "b"), features(boxes),
                                                           chip_size=CHIP, min_visible=0.4, block_size=48, seed=1))
    assert sum(full.chips.values()) > sum(half.chips.values())  # chips without a box kept
    assert full.skipped["no_box"] == 0 and half.skipped["no_box"] > 0
    whole = sum(sum(v.values()) for v in full.boxes.values())
    assert whole < sum(sum(v.values()) for v in half.boxes.values())  # clipped boxes only with min_visible < 1
    for item in read_object_folder(tmp_path / "a").images:  # min_visible 1: no box is clipped
        assert ((item.boxes[:, 2:] - item.boxes[:, :2]) >= 4).all()


def test_plain_voc_folder_of_other_sizes_is_cut_into_samples(tmp_path):
    from deepraster.training.detection_data import prepare_samples, read_window
    from deepraster.training.voc import write_voc

    rng = np.random.default_rng(3)
    for name, (w, h) in {"big": (150, 100), "small": (40, 50)}.items():
        gdal.GetDriverByName("PNG").CreateCopy(str(tmp_path / f"{name}.png"), gdal_array_of(
            rng.integers(0, 255, (3, h, w), dtype=np.uint8)))
        boxes = np.array([[10, 10, 30, 30], [60.5, 40, 75.5, 70], [130, 80, 150, 100]], float)
        keep = (boxes[:, 2] <= w) & (boxes[:, 3] <= h)
        write_voc(tmp_path / f"{name}.xml", f"{name}.png", (w, h, 3), boxes[keep], ["Tree"] * int(keep.sum()),
                  [False] * int(keep.sum()))
    folder = read_object_folder(tmp_path)
    assert folder.layout == "voc" and folder.classes == [{"value": 0, "name": "Tree", "color": "#1f77b4"}]
    data = prepare_samples(folder, 64, 0.3, 0)
    assert data.tile == 64 and data.band_count == 3 and data.drawn_split
    big = [s for s in data.train + data.validation if s.image.endswith("big.png")]
    assert sorted((s.window.col_off, s.window.row_off) for s in big) == [(0, 0), (0, 36), (64, 0), (64, 36),
                                                                         (86, 0), (86, 36)]
    tile = next(s for s in big if (s.window.col_off, s.window.row_off) == (64, 36))
    assert tile.boxes.tolist() == [[0.0, 4.0, 11.5, 34.0]]  # 60.5–75.5 × 40–70 cut at x = 64: 77 % visible
    small = next(s for s in data.train + data.validation if s.image.endswith("small.png"))
    pixels = read_window(small)
    assert pixels.shape == (3, 64, 64) and not pixels[:, 50:].any() and not pixels[:, :, 40:].any()


def gdal_array_of(array: np.ndarray):
    from osgeo import gdal_array

    return gdal_array.OpenArray(array)


def test_turned_boxes_follow_the_turned_image():
    from deepraster.training.detection_data import turn_boxes

    rng = np.random.default_rng(4)
    for turns in range(4):
        for flip in (False, True):
            x1, y1 = rng.integers(0, 20, 2)
            box = np.array([[x1, y1, x1 + rng.integers(1, 12), y1 + rng.integers(1, 12)]], float)
            mask = np.zeros((1, 32, 32), bool)
            mask[0, int(box[0, 1]):int(box[0, 3]), int(box[0, 0]):int(box[0, 2])] = True
            mask = np.rot90(mask, turns, (1, 2))
            mask = mask[:, :, ::-1] if flip else mask
            rows, cols = np.nonzero(mask[0])
            assert turn_boxes(box, 32, turns, flip).tolist() == [[cols.min(), rows.min(), cols.max() + 1,
                                                                  rows.max() + 1]]


def test_average_precision_on_cases_worked_by_hand():
    """One class, 4 reference boxes in two images; detections ranked 0.9 TP, 0.8 FP (a duplicate), 0.7 TP, 0.6 FP:
    precision 1, ½, ⅔, ½ at recall ¼, ¼, ½, ½ → COCO AP = (26 × 1 + 25 × ⅔) / 101 at IoU 0.5; the duplicate and
    a box shifted to IoU 0.6 show the thresholds."""
    from deepraster.analysis.detection_metrics import DetectionScores

    scores = DetectionScores([1], ["tree"])
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    b = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float)
    scores.add(np.array([[0, 0, 10, 10], [0, 0, 10, 10]]), np.array([0.9, 0.8]), np.array([1, 1]), a, [1, 1])
    scores.add(np.array([[0, 0, 10, 12.5], [80, 80, 90, 90], [0, 0, 5, 5]]), np.array([0.7, 0.6, 0.1]),
               np.array([1, 1, 2]), b, [1, 1])
    result = scores.result()
    assert result["map_50"] == pytest.approx((26 * 1 + 25 * 2 / 3) / 101)
    per = result["per_class"][0]
    assert per["reference_boxes"] == 4 and per["detections"] == 4 and per["recall_max"] == 0.5
    # IoU of the 0.7 box is 0.8: a true positive up to threshold 0.8, a false positive above
    expected = [(26 * 1 + 25 * 2 / 3) / 101] * 7 + [26 / 101] * 3
    assert per["ap_50_95"] == pytest.approx(np.mean(expected))
    empty = DetectionScores([1, 2]).result()
    assert empty["map_50"] is None and empty["per_class"][1]["ap_50"] is None


def test_bad_inputs_refused_with_nothing_written(scene, tmp_path, qgis_app):
    import processing
    from qgis.core import QgsProcessingException

    raster, boxes = scene
    big = [*boxes, (100, 20, 140, 50, "car")]
    with pytest.raises(TrainingDataError, match=r"1 of \d+ boxes are larger than a chip of 32 px .* at least 40 px"):
        export_object_training_data(ObjectExportRequest(str(raster), str(tmp_path / "big"), features(big),
                                                        chip_size=CHIP))
    elsewhere = [(x1 + 1000, y1, x2 + 1000, y2, name) for x1, y1, x2, y2, name in boxes]
    with pytest.raises(TrainingDataError, match="the box layer covers another place"):
        export_object_training_data(ObjectExportRequest(str(raster), str(tmp_path / "v"), features(elsewhere),
                                                        chip_size=CHIP))
    with pytest.raises(TrainingDataError, match="minimum visible fraction"):
        export_object_training_data(ObjectExportRequest(str(raster), str(tmp_path / "v"), features(boxes),
                                                        chip_size=CHIP, min_visible=0))
    layer = write_vector(tmp_path / "boxes.gpkg", [polygon(*b[:4]) for b in boxes],
                         {"kind": [b[4] for b in boxes]})
    with pytest.raises(QgsProcessingException, match="class field 'label' is not in the label layer"):
        processing.run("deepraster:export_object_training_data", {
            "INPUT": str(raster), "LABELS": str(layer), "LABEL_FIELD": "label", "CHIP_SIZE": CHIP,
            "OUTPUT": str(tmp_path / "nofield")}, feedback=recording_feedback())
    assert not any(p.name.startswith(("big", "v", "nofield", ".big", ".nofield")) for p in tmp_path.iterdir())
    result = processing.run("deepraster:export_object_training_data", {
        "INPUT": str(raster), "LABELS": str(layer), "LABEL_FIELD": "kind", "CHIP_SIZE": CHIP, "BLOCK_SIZE": 48,
        "SEED": 2, "OUTPUT": str(tmp_path / "ok")}, feedback=recording_feedback())
    assert result["TRAIN_CHIPS"] > 0 and result["VALIDATION_CHIPS"] > 0
    assert Path(result["MANIFEST"]).is_file() and (tmp_path / "ok" / "labels" / "000000000.xml").is_file()
