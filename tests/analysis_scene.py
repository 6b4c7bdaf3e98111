"""What the QGIS tests of the feature-space analysis algorithms share: a small 6-band scene with three land covers,
nodata and NaN pixels, labelled training polygons, points in another CRS, and running an algorithm with a
feedback that keeps its messages."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import recording_feedback, write_raster, write_vector
from osgeo import osr

GT = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)
H, W = 120, 180
CLASSES = ("water", "forest", "farm")  # columns 0–59, 60–119, 120–179
NODATA = -9999.0


@pytest.fixture(autouse=True)
def private_config(tmp_path_factory, monkeypatch):
    """Signing secrets go to a temporary folder, never to the user's configuration."""
    monkeypatch.setenv("DEEPRASTER_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))


def Feedback():  # noqa: N802 (used like a class: Feedback())
    """A QgsProcessingFeedback that keeps the messages (see helpers.recording_feedback)."""
    return recording_feedback()


def run(alg: str, params: dict, feedback=None) -> dict:
    import processing

    return processing.run(f"deepraster:{alg}", params, feedback=feedback or Feedback())


def centre(col: float, row: float) -> tuple[float, float]:
    return GT[0] + (col + 0.5) * GT[1], GT[3] + (row + 0.5) * GT[5]


def square(col: int, row: int, size: int = 10) -> str:
    x0, y0 = GT[0] + col * 10, GT[3] - row * 10
    x1, y1 = x0 + size * 10, y0 - size * 10
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """6-band float32 raster: three land covers side by side, a nodata block and NaN pixels; training polygons."""
    folder = tmp_path_factory.mktemp("scene")
    rng = np.random.default_rng(0)
    looks = np.array([[800, 700, 500, 200, 100, 50], [300, 500, 300, 3000, 1500, 700],
                      [900, 1000, 1100, 2500, 2800, 2200]], np.float32)
    cover = np.repeat(np.arange(3), 60)[None, :].repeat(H, axis=0)
    data = looks[cover].transpose(2, 0, 1) + rng.normal(0, 40, (6, H, W)).astype(np.float32)
    data[:, 100:, :20] = NODATA
    data[2, 5, 5] = np.nan
    raster = write_raster(folder / "scene.tif", data, nodata=NODATA,
                          descriptions=("B02", "B03", "B04", "B08", "B11", "B12"))
    polygons, names, codes, values, ids, zones = [], [], [], [], [], []
    for k in range(3):
        for j, (c, r) in enumerate(((5, 10), (30, 40), (15, 70), (40, 5))):
            polygons.append(square(60 * k + c, r))
            names.append(CLASSES[k])
            codes.append(k + 1)
            values.append(float(looks[k, 3]) / 100.0)
            ids.append(10 * k + j)
            zones.append(f"zone {j}")
    polygons += [square(2, 2, 3), "POLYGON((0 0,10 0,10 10,0 10,0 0))"]  # no label; far outside the raster
    names += [None, "water"]
    codes += [None, 1]
    values += [None, 8.0]
    ids += [99, 98]
    zones += ["zone 0", "zone 0"]
    training = write_vector(folder / "training.gpkg", polygons,
                            {"fclass": names, "cid": codes, "value": values, "pid": ids, "zone": zones})
    return {"raster": str(raster), "data": data, "cover": cover, "training": str(training), "folder": folder}


def transformer(source_epsg: int, target_epsg: int) -> osr.CoordinateTransformation:
    """Coordinates from one EPSG code to another, in x/y (longitude/latitude) order."""
    source, target = osr.SpatialReference(), osr.SpatialReference()
    source.ImportFromEPSG(source_epsg)
    target.ImportFromEPSG(target_epsg)
    for srs in (source, target):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return osr.CoordinateTransformation(source, target)


def points_4326(folder, pixels: list[tuple[int, int]], labels: list[str], name: str = "points.gpkg",
                field: str = "kind") -> str:
    """Points at pixel centres, stored in EPSG:4326 (the algorithms reproject them to the raster's CRS)."""
    to_wgs = transformer(32633, 4326)
    wkts = []
    for c, r in pixels:
        lon, lat, _ = to_wgs.TransformPoint(*centre(c, r))
        wkts.append(f"POINT({lon!r} {lat!r})")
    return str(write_vector(folder / name, wkts, {field: labels}, epsg=4326))
