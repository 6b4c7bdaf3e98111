"""Detect objects: exact, streaming cross-tile merging with a deterministic detector in package form (boxes around
bright squares, tests/detection_scene.py) on squares placed across tile edges and corners, for several tile /
overlap settings: every square found once, its box within 0.5 px, georeferenced exactly (metres and degrees);
the package task checks and bad inputs, with nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from deepraster.models.sources import open_model
from deepraster.objects.detection import DetectRequest, detect_objects
from deepraster.tiling.callbacks import Callbacks
from deepraster.tiling.errors import DeepRasterError, RunCancelled
from deepraster.tiling.grid import TileGrid
from deepraster.tiling.window import Window
from detection_scene import SIZE, detection_package, place_squares, square_raster
from helpers import utm_to_wgs84, write_raster
from osgeo import ogr

ogr.UseExceptions()
UTM = (500000.0, 0.5, 0.0, 5800000.0, 0.0, -0.5)
DEGREES = (13.0, 1e-5, 0.0, 52.5, 0.0, -1e-5)
BANDS = ("value", "score")


@pytest.fixture(scope="module")
def package_folder(tmp_path_factory) -> Path:
    return detection_package(tmp_path_factory.mktemp("pkg") / "squares")


def scene(folder: Path, tile: int, overlap: int, width: int = 300, height: int = 220, geotransform=UTM,
          epsg: int = 32633, seed: int = 0, **kwargs) -> tuple[Path, list]:
    """A raster with squares across the inner tile edges and corners of the grid of ``tile`` / ``overlap``."""
    grid = TileGrid(Window(0, 0, width, height), tile, overlap)
    edges_x = sorted({*grid.col_starts[1:], *(s + tile for s in grid.col_starts[:-1])})
    edges_y = sorted({*grid.row_starts[1:], *(s + tile for s in grid.row_starts[:-1])})
    data, truth = square_raster(place_squares(edges_x, edges_y, width, height, seed), width, height, seed)
    path = write_raster(folder / f"scene_{tile}_{overlap}_{epsg}.tif", data, geotransform=geotransform, epsg=epsg,
                        descriptions=BANDS, **kwargs)
    return path, truth


def read_boxes(path: Path, geotransform) -> list[tuple[float, float, float, float, int, str, float]]:
    """The output's boxes in pixels (x1, y1, x2, y2), class value, name and confidence; checks every corner lies
    exactly on the geotransform's image of the box."""
    g = geotransform
    ds = ogr.Open(str(path))
    layer = ds.GetLayer(0)
    out = []
    for feature in layer:
        ring = feature.GetGeometryRef().GetGeometryRef(0)
        xs, ys = np.array(ring.GetPoints())[:, 0], np.array(ring.GetPoints())[:, 1]
        px, py = (xs - g[0]) / g[1], (ys - g[3]) / g[5]
        x1, x2, y1, y2 = px.min(), px.max(), py.min(), py.max()
        corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]])
        expected = np.column_stack([g[0] + np.round(corners[:, 0]) * g[1], g[3] + np.round(corners[:, 1]) * g[5]])
        assert np.allclose(np.column_stack([xs, ys]), expected, rtol=0, atol=abs(g[1]) * 1e-6)
        out.append((x1, y1, x2, y2, feature.GetField("class_value"), feature.GetField("class_name"),
                    feature.GetField("confidence")))
    return out


def assert_exact(found: list, truth: list, threshold: float = 0.0) -> None:
    """Every square scoring at least ``threshold`` found once (box within 0.5 px, class and score right); no
    other box."""
    wanted = [t for t in truth if t[3] >= threshold]
    matched = set()
    for x, y, label, score in wanted:
        hits = [i for i, b in enumerate(found)
                if max(abs(b[0] - x), abs(b[1] - y), abs(b[2] - x - SIZE), abs(b[3] - y - SIZE)) <= 0.5]
        assert len(hits) == 1, f"square at {x}, {y}: {len(hits)} boxes"
        box = found[hits[0]]
        assert box[4] == label and box[5] == ("dim", "bright")[label - 1] and box[6] == pytest.approx(score, abs=1e-5)
        matched.add(hits[0])
    assert len(found) == len(wanted), f"{len(found) - len(wanted)} extra boxes"


@pytest.mark.parametrize(("tile", "overlap", "panel"), [(64, 24, 6144), (64, 16, 6144), (100, 30, 6144),
                                                        (48, 20, 6144), (80, 40, 6144), (64, 24, 90), (48, 20, 60)])
def test_every_square_once_across_tile_edges_and_corners(tmp_path, package_folder, tile, overlap, panel):
    """Also read in column panels (``panel`` px wide): the same boxes."""
    raster, truth = scene(tmp_path, tile, overlap)
    assert len(truth) > 25
    out = tmp_path / "boxes.gpkg"
    stats = detect_objects(DetectRequest(str(raster), open_model(package_folder), str(out), confidence=0.0,
                                         tile_size=tile, overlap=overlap, device="cpu", panel_width=panel))
    assert_exact(read_boxes(out, UTM), truth)
    assert stats.boxes == len(truth) and stats.boxes_held_max < len(truth)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boxes.gpkg", raster.name]


def test_threshold_class_agnostic_and_nodata_tiles(tmp_path, package_folder):
    raster, truth = scene(tmp_path, 64, 24)
    data = np.stack([np.asarray(b) for b in _bands(raster)])
    for x, y, _, _ in truth:  # no square across the nodata edge
        data[:, y:y + SIZE, x:x + SIZE] *= x >= 70
    data[:, :, :70] = 255  # nodata: the first column of tiles has no valid pixel
    kept = [t for t in truth if t[0] >= 70]
    nodata = write_raster(tmp_path / "nodata.tif", data, geotransform=UTM, nodata=255, descriptions=BANDS)
    out = tmp_path / "boxes.gpkg"
    stats = detect_objects(DetectRequest(str(nodata), open_model(package_folder), str(out), confidence=0.555,
                                         class_agnostic=True, device="cpu"))
    assert_exact(read_boxes(out, UTM), kept, threshold=0.555)
    assert stats.tiles_skipped >= 4


def _bands(path: Path):
    from osgeo import gdal

    ds = gdal.Open(str(path))
    return [ds.GetRasterBand(i + 1).ReadAsArray() for i in range(ds.RasterCount)]


def test_through_processing_in_degrees(qgis_app, tmp_path, package_folder):
    """EPSG:4326: the boxes are exact in longitude / latitude, the layer's CRS is the raster's."""
    import processing

    raster, truth = scene(tmp_path, 64, 24, geotransform=DEGREES, epsg=4326, seed=3)
    out = tmp_path / "objects.gpkg"
    result = processing.run("deepraster:detect_objects", {
        "INPUT": str(raster), "MODEL": str(package_folder / "model.json"), "CONFIDENCE": 0.0, "DEVICE": "cpu",
        "OUTPUT": str(out)})
    temporary = processing.run("deepraster:detect_objects", {
        "INPUT": str(raster), "MODEL": str(package_folder / "model.json"), "OUTPUT": "TEMPORARY_OUTPUT"})
    assert temporary["OUTPUT"].endswith(".gpkg") and Path(temporary["OUTPUT"]).is_file()
    assert Path(result["OUTPUT"]) == out
    assert_exact(read_boxes(out, DEGREES), truth)
    ds = ogr.Open(str(out))
    assert ds.GetLayer(0).GetSpatialRef().GetAuthorityCode(None) == "4326"
    ds = None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([raster.name, "objects.gpkg"])


def test_cancel_leaves_nothing(tmp_path, package_folder):
    raster, _ = scene(tmp_path, 64, 24)
    out = tmp_path / "boxes.gpkg"
    calls = []
    callbacks = Callbacks(is_cancelled=lambda: bool(calls.append(1)) or len(calls) > 2)
    with pytest.raises(RunCancelled):
        detect_objects(DetectRequest(str(raster), open_model(package_folder), str(out), device="cpu"), callbacks)
    assert sorted(p.name for p in tmp_path.iterdir()) == [raster.name]


def test_task_of_the_package_and_the_tool(qgis_app, tmp_path, package_folder, model_4b_l1c):
    """A detection package in Classify pixels, and a pixel-classification package in Detect objects: refused with a
    message naming the right tool; nothing written."""
    import processing
    from qgis.core import QgsProcessingException

    raster, _ = scene(tmp_path, 64, 24)
    with pytest.raises(QgsProcessingException, match="object detection model.*Use \"Detect objects\""):
        processing.run("deepraster:classify_pixels", {
            "INPUT": str(raster), "MODEL": str(package_folder / "model.json"), "DEVICE": "cpu",
            "OUTPUT_CLASSES": str(tmp_path / "c.tif"), "OUTPUT_PROBABILITIES": str(tmp_path / "p.tif")})
    with pytest.raises(QgsProcessingException, match="pixel classification model.*Use \"Classify pixels\""):
        processing.run("deepraster:detect_objects", {
            "INPUT": str(raster), "MODEL": str(model_4b_l1c / "model.json"), "OUTPUT": str(tmp_path / "o.gpkg")})
    assert sorted(p.name for p in tmp_path.iterdir()) == [raster.name]


@pytest.mark.parametrize(("changes", "message"), [
    ({"CONFIDENCE": 1.5}, r"Confidence threshold \(0–1\): 1.5 is outside 0–1"),
    ({"IOU": -0.1}, r"NMS IoU threshold \(0–1\): -0.1 is outside 0–1"),
    ({"OUTPUT": "missing/o.gpkg"}, "does not exist"),
    ({"OUTPUT": "o.tif"}, r"\.gpkg"),
])
def test_bad_inputs_write_nothing(qgis_app, tmp_path, package_folder, changes, message):
    import processing
    from qgis.core import QgsProcessingException

    raster, _ = scene(tmp_path, 64, 24)
    params = {"INPUT": str(raster), "MODEL": str(package_folder / "model.json"), "DEVICE": "cpu",
              "OUTPUT": "o.gpkg", **changes}
    params["OUTPUT"] = str(tmp_path / params["OUTPUT"])
    with pytest.raises(QgsProcessingException, match=message):
        processing.run("deepraster:detect_objects", params)
    assert sorted(p.name for p in tmp_path.iterdir()) == [raster.name]


@pytest.mark.parametrize("field", ["confidence", "iou"])
def test_core_refuses_thresholds_outside_0_1(tmp_path, package_folder, field):
    request = DetectRequest("x.tif", open_model(package_folder), str(tmp_path / "o.gpkg"), **{field: 1.01})
    with pytest.raises(DeepRasterError, match="outside 0–1"):
        detect_objects(request)


def test_detection_package_format_schema_and_inspect(package_folder):
    """The detection package validates (JSON Schema and plugin), Inspect runs the detector against the contract, and
    detectors of other frameworks than TorchScript and torchvision are refused, naming the task and the
    architecture."""
    import json

    import jsonschema
    from deepraster.models.description import parse_description
    from deepraster.models.errors import ModelPackageError
    from deepraster.models.inspect import inspect_model
    from helpers import REPO

    schema = json.loads((REPO / "models" / "schema" / "model-package-1.0.schema.json").read_text())
    raw = json.loads((package_folder / "model.json").read_text())
    jsonschema.validate(raw, schema)
    report = inspect_model(package_folder)
    assert report["status"] == "valid" and report["dry_run"]["status"] == "ok", report
    assert report["package"]["task"] == "object_detection" and len(report["package"]["classes"]) == 2
    torchvision = {**raw, "architecture": {"framework": "smp", "arch": "FasterRCNN", "encoder": "resnet50",
                                           "in_channels": 2, "out_channels": 2},
                   "weights": {"file": "weights.safetensors"}, "classes": raw["classes"][:1]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(torchvision, schema)
    with pytest.raises(ModelPackageError) as info:
        parse_description(torchvision, package_folder)
    message = str(info.value)
    assert "task 'object_detection' takes framework 'torchscript' (a scripted detector) or 'torchvision' (a " \
           "detector built by name), found 'smp' 'FasterRCNN'" in message
    assert "$.classes: lists 1 classes but architecture.out_channels is 2" in message


def test_merger_suppresses_across_overlapping_tiles_and_streams():
    """Two boxes of one object from neighbouring tiles, each centred in its own tile's core: the lower score goes
    (not across classes unless class-agnostic); a row is flushed as soon as no later row overlaps it."""
    from deepraster.models.detectors import Detections
    from deepraster.objects.merge import StreamingMerger

    grid = TileGrid(Window(0, 0, 200, 200), 100, 40)
    assert grid.row_starts == grid.col_starts == [0, 60, 100]
    tiles = list(grid)

    def box(x1, label, score, y1=10):
        return Detections(np.array([[x1, y1, x1 + 16, y1 + 16]], float), np.array([score], np.float32),
                          np.array([label]))

    for agnostic, label_b, expected in ((False, 1, 1), (False, 2, 2), (True, 2, 1)):
        rows: list = []
        merger = StreamingMerger(grid, 0.5, agnostic, rows.append)
        merger.add(tiles[0], box(70, 1, 0.9))  # centre x 78 < 80: tile 0's core
        merger.add(tiles[1], box(74, label_b, 0.8))  # centre x 82: tile 1's core; IoU 0.6
        merger.add(tiles[2], Detections.empty())
        merger.flush()
        assert rows == []
        for t in tiles[3:6]:
            merger.add(t, Detections.empty())
        merger.flush()  # row 2 does not overlap row 0: row 0's tiles are final
        assert len(rows) == 1 and len(rows[0]) == expected
        assert rows[0].scores[0] == pytest.approx(0.9)
        merger.finish()


def test_intersection_over_smaller_removes_nested_boxes_within_and_across_tiles():
    """A box nested in a larger one has a small IoU with it (here 0.25): NMS keeps both; with an IoS threshold the
    lower score goes, whether the two boxes come from one tile or from two overlapping tiles."""
    from deepraster.models.detectors import Detections
    from deepraster.objects.boxes import ios_matrix, iou_matrix, nms
    from deepraster.objects.merge import StreamingMerger

    big, small = np.array([[60, 10, 100, 50]], float), np.array([[82, 12, 102, 32]], float)
    assert iou_matrix(big, small)[0, 0] < 0.3 and ios_matrix(big, small)[0, 0] == pytest.approx(0.9)
    boxes, scores, labels = np.concatenate([big, small]), np.array([0.7, 0.9]), np.array([1, 1])
    assert list(nms(boxes, scores, labels, 0.5)) == [1, 0]
    assert list(nms(boxes, scores, labels, 0.5, ios=0.8)) == [1]
    assert list(nms(boxes, scores, labels, 0.5, ios=0.95)) == [1, 0]

    grid = TileGrid(Window(0, 0, 200, 200), 100, 40)  # column cores [0, 80) and [80, 130): one box in each
    tiles = list(grid)
    inner = np.array([[62, 12, 82, 32]], float)  # centre x 72: tile 0; inside ``big`` (centre x 80: tile 1)
    for ios, expected in ((None, 2), (0.8, 1)):
        rows: list = []
        merger = StreamingMerger(grid, 0.5, False, rows.append, ios)
        merger.add(tiles[0], Detections(inner, np.array([0.9], np.float32), np.array([1])))
        merger.add(tiles[1], Detections(big, np.array([0.7], np.float32), np.array([1])))
        for t in tiles[2:]:
            merger.add(t, Detections.empty())
        merger.finish()
        kept = np.concatenate([r.scores for r in rows])
        assert len(kept) == expected and kept.max() == pytest.approx(0.9)


def test_core_refuses_an_ios_threshold_outside_0_1(tmp_path, package_folder):
    request = DetectRequest("x.tif", open_model(package_folder), str(tmp_path / "o.gpkg"), ios=1.5)
    with pytest.raises(DeepRasterError, match="intersection-over-smaller threshold 1.5 is outside 0–1"):
        detect_objects(request)


def polygon_wkb(pixels: list[tuple[float, float]], geotransform=UTM) -> bytes:
    """A polygon given in pixel coordinates, as WKB in the raster's CRS."""
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for col, row in [*pixels, pixels[0]]:
        ring.AddPoint_2D(geotransform[0] + col * geotransform[1], geotransform[3] + row * geotransform[5])
    polygon = ogr.Geometry(ogr.wkbPolygon)
    polygon.AddGeometry(ring)
    return polygon.ExportToWkb()


def test_mask_keeps_objects_whose_centre_is_inside_and_skips_tiles_outside(tmp_path, package_folder):
    """A slanted mask over the left part: exactly the squares whose centre pixel lies inside it are written, from
    tiles with their merge unchanged; tiles wholly outside are not predicted."""
    raster, truth = scene(tmp_path, 64, 24)
    corners = [(-5.0, -5.0), (181.3, -5.0), (97.7, 230.0), (-5.0, 230.0)]
    mask = ogr.CreateGeometryFromWkb(polygon_wkb(corners, (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)))

    def inside(x: int, y: int) -> bool:
        point = ogr.Geometry(ogr.wkbPoint)
        point.AddPoint_2D(np.floor(x + SIZE / 2) + 0.5, np.floor(y + SIZE / 2) + 0.5)  # the centre pixel's centre
        return mask.Contains(point)

    kept = [t for t in truth if inside(t[0], t[1])]
    assert 5 < len(kept) < len(truth) - 5
    out = tmp_path / "boxes.gpkg"
    lines: list[str] = []
    stats = detect_objects(DetectRequest(str(raster), open_model(package_folder), str(out), confidence=0.0,
                                         tile_size=64, overlap=24, device="cpu", mask=(polygon_wkb(corners),)),
                           Callbacks(info=lines.append))
    assert_exact(read_boxes(out, UTM), kept)
    assert stats.tiles_skipped >= 4 and any(line.startswith("Mask: 1 polygon(s)") for line in lines)


def test_mask_in_another_crs_through_processing_and_a_mask_outside_the_raster(qgis_app, tmp_path, package_folder):
    import processing
    from osgeo import osr
    from qgis.core import QgsProcessingException

    raster, truth = scene(tmp_path, 64, 24)
    to_wgs84 = utm_to_wgs84()

    def mask_layer(name: str, pixels: list[tuple[float, float]]) -> Path:
        geometry = ogr.CreateGeometryFromWkb(polygon_wkb(pixels))
        geometry.Transform(to_wgs84)
        path = tmp_path / f"{name}.gpkg"
        ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
        wgs84 = osr.SpatialReference()
        wgs84.ImportFromEPSG(4326)
        layer = ds.CreateLayer(name, wgs84, ogr.wkbPolygon)
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(geometry)
        layer.CreateFeature(feature)
        ds = None
        return path

    left = mask_layer("left", [(-5, -5), (150, -5), (150, 230), (-5, 230)])
    out = tmp_path / "objects.gpkg"
    processing.run("deepraster:detect_objects", {"INPUT": str(raster), "MODEL": str(package_folder / "model.json"),
                                                 "MASK": str(left), "CONFIDENCE": 0.0, "TILE_SIZE": 64,
                                                 "OVERLAP": 24, "DEVICE": "cpu", "OUTPUT": str(out)})
    centres = [(b[0] + b[2]) / 2 for b in read_boxes(out, UTM)]  # the reprojected edge runs near column 150
    assert centres and max(centres) < 155
    assert sum(x < 145 for x in centres) == sum(x + SIZE / 2 < 145 for x, _, _, _ in truth) > 5
    far = mask_layer("far", [(5000, 5000), (5100, 5000), (5100, 5100), (5000, 5100)])
    with pytest.raises(QgsProcessingException, match="No mask polygon lies inside the raster"):
        processing.run("deepraster:detect_objects", {"INPUT": str(raster), "MODEL": str(package_folder / "model.json"),
                                                     "MASK": str(far), "DEVICE": "cpu",
                                                     "OUTPUT": str(tmp_path / "none.gpkg")})
    assert not (tmp_path / "none.gpkg").exists()


def test_maximum_detections_in_all_keeps_the_most_confident(tmp_path, package_folder):
    """The N most confident squares of the whole raster (N where the scores drop, so there is no tie at the cut),
    exact as ever; a limit above the count keeps all."""
    raster, truth = scene(tmp_path, 64, 24)
    scores = sorted((t[3] for t in truth), reverse=True)
    n = next(i for i in range(len(scores) // 3, len(scores)) if scores[i - 1] > scores[i])
    out = tmp_path / "best.gpkg"
    lines: list[str] = []
    stats = detect_objects(DetectRequest(str(raster), open_model(package_folder), str(out), confidence=0.0,
                                         device="cpu", max_total=n), Callbacks(info=lines.append))
    assert stats.boxes == n and any(line.startswith(f"Kept the {n} most confident of {len(truth)}") for line in lines)
    assert_exact(read_boxes(out, UTM), [t for t in truth if t[3] >= scores[n - 1]])
    stats = detect_objects(DetectRequest(str(raster), open_model(package_folder), str(tmp_path / "all.gpkg"),
                                         confidence=0.0, device="cpu", max_total=10 * len(truth)))
    assert stats.boxes == len(truth)
