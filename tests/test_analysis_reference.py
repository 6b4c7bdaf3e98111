"""Reference features → pixels, and the analysis pipeline's reference reading, in plain Python (no QGIS): which
pixel a point or polygon gives, seeded subsets per polygon, group codes, and every skip reason counted."""

from __future__ import annotations

import numpy as np
import pytest
from deepraster.analysis.errors import TrainingDataError
from deepraster.analysis.pipeline import RasterSelection, ReferenceLayer, read_reference, training_set
from deepraster.analysis.reference import (
    NO_GEOMETRY,
    NO_LABEL,
    NOT_REPROJECTABLE,
    ON_NODATA,
    OUTSIDE,
    ReferenceFeature,
    reference_pixels,
)
from deepraster.tiling.callbacks import Callbacks
from deepraster.tiling.source import RasterSource
from helpers import write_raster
from osgeo import ogr

GT = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)  # 10 m pixels; pixel (c, r) centre: 500005 + 10c, 5799995 - 10r
SIZE = (20, 10)  # width, height


def wkb(wkt: str) -> bytes:
    return bytes(ogr.CreateGeometryFromWkt(wkt).ExportToWkb())


def centre(col: int, row: int) -> str:
    return f"{500005 + 10 * col} {5799995 - 10 * row}"


def square(col0: int, row0: int, col1: int, row1: int) -> str:
    """A polygon covering pixels col0..col1-1, row0..row1-1 exactly."""
    x0, x1, y0, y1 = 500000 + 10 * col0, 500000 + 10 * col1, 5800000 - 10 * row0, 5800000 - 10 * row1
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


def test_points_give_the_pixel_under_them_and_skips_are_counted():
    features = [
        ReferenceFeature(1, wkb(f"POINT({centre(3, 2)})"), "water"),
        ReferenceFeature(2, wkb(f"MULTIPOINT(({centre(0, 0)}),({centre(19, 9)}),(0 0))"), "forest"),
        ReferenceFeature(3, wkb("POINT(0 0)"), "water"),  # outside
        ReferenceFeature(4, wkb(f"POINT({centre(5, 5)})"), None),  # no label
        ReferenceFeature(5, None, "water"),  # no geometry
        ReferenceFeature(6, wkb(f"POINT({centre(6, 6)})"), "water", unusable=NOT_REPROJECTABLE),
    ]
    ref = reference_pixels(features, GT, SIZE, points=True, labelled=True, per_polygon=None, seed=0, role="points")
    assert ref.cols.tolist() == [3, 0, 19] and ref.rows.tolist() == [2, 0, 9]
    assert ref.labels.tolist() == ["water", "forest", "forest"]
    assert ref.groups.tolist() == [1, 2, 2]  # feature ids
    assert ref.features_used == 2
    assert ref.skipped == {OUTSIDE: 1, NO_LABEL: 1, NO_GEOMETRY: 1, NOT_REPROJECTABLE: 1}
    np.testing.assert_allclose(ref.xy[0], [500035.0, 5799975.0])


def test_polygons_give_pixel_centres_inside_with_a_seeded_cap_and_group_codes():
    features = [ReferenceFeature(10, wkb(square(0, 0, 4, 3)), "a", group="north"),
                ReferenceFeature(11, wkb(square(10, 5, 12, 7)), "b", group="south"),
                ReferenceFeature(12, wkb(square(15, 0, 17, 2)), "a", group="north")]
    every = reference_pixels(features, GT, SIZE, points=False, labelled=True, per_polygon=None, seed=0, role="p")
    assert len(every.cols) == 12 + 4 + 4
    assert sorted(zip(every.cols[12:16].tolist(), every.rows[12:16].tolist(), strict=True)) == [
        (10, 5), (10, 6), (11, 5), (11, 6)]
    assert every.groups.tolist() == [0] * 12 + [1] * 4 + [0] * 4  # group values coded in order of appearance
    capped = [reference_pixels(features, GT, SIZE, False, True, 3, seed=7, role="p") for _ in range(2)]
    assert len(capped[0].cols) == 9
    np.testing.assert_array_equal(capped[0].cols, capped[1].cols)  # same seed, same pixels
    other = reference_pixels(features, GT, SIZE, False, True, 3, seed=8, role="p")
    assert not np.array_equal(capped[0].cols * 100 + capped[0].rows, other.cols * 100 + other.rows)


def test_no_feature_inside_names_what_was_skipped():
    features = [ReferenceFeature(1, wkb("POINT(0 0)"), "x"), ReferenceFeature(2, None, "x")]
    with pytest.raises(TrainingDataError, match=r"None of the 2 feature\(s\).*1 feature\(s\) outside the raster, "
                                                 r"1 feature\(s\) without geometry"):
        reference_pixels(features, GT, SIZE, True, True, None, 0, "training layer")
    with pytest.raises(TrainingDataError, match="the layer is empty"):
        reference_pixels([], GT, SIZE, True, True, None, 0, "training layer")


def test_pipeline_reads_values_skips_nodata_and_caps_samples(tmp_path):
    data = np.arange(2 * 10 * 20, dtype=np.float32).reshape(2, 10, 20)
    data[:, 0, 0] = -1.0  # nodata
    path = write_raster(tmp_path / "r.tif", data, geotransform=GT, nodata=-1.0)
    selection = RasterSelection.of(RasterSource.open(str(path)), [2])
    assert selection.bands == (2,) and selection.band_names == ("band 2",)
    features = [ReferenceFeature(1, wkb(f"MULTIPOINT(({centre(0, 0)}),({centre(4, 1)}))"), "a"),
                ReferenceFeature(2, wkb(f"MULTIPOINT(({centre(10, 5)}),({centre(11, 5)}),({centre(11, 6)}))"), "b")]
    messages: list[str] = []
    ref = read_reference(selection, ReferenceLayer(features, True, True, None, "training layer"), 0,
                         Callbacks(info=messages.append))
    assert ref.skipped[ON_NODATA] == 1
    assert ref.values[:, 0].tolist() == [data[1, 1, 4], data[1, 5, 10], data[1, 5, 11], data[1, 6, 11]]
    assert messages == ["Training layer: 2 feature(s) give 4 usable pixel(s); skipped: 1 pixel(s) on nodata."]
    layer = ReferenceLayer(features, True, True, None, "training layer")
    capped = training_set(selection, layer, seed=0, max_samples=3)
    assert len(capped) == 3 and set(capped.y.tolist()) <= {"a", "b"}
