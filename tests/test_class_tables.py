"""Class tables from files: CSV, the colour map QGIS exports and the .qml style QGIS saves for a class raster;
Create model package reading one instead of the typed table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from deepraster.models.class_tables import read_class_table
from deepraster.models.errors import ModelPackageError
from deepraster.models.sources import open_model
from helpers import smooth_field

EXPECTED = [{"value": 0, "name": "clear", "color": "#3a9d23"}, {"value": 1, "name": "cloud", "color": "#26a4e3"},
            {"value": 4, "name": "cloud shadow", "color": "#5a3e1b"}]


def qgis_items():
    from qgis.core import QgsColorRampShader
    from qgis.PyQt.QtGui import QColor

    return [QgsColorRampShader.ColorRampItem(c["value"], QColor(c["color"]), c["name"]) for c in EXPECTED]


def test_csv_with_header_and_semicolons_keeps_the_file_order(tmp_path):
    """The order of the rows is the order of the model's output channels, whatever the values."""
    path = tmp_path / "classes.csv"
    path.write_text("value;name;colour\n4; cloud shadow ;#5A3E1B\n0;clear;#3a9d23\n\n1;cloud;#26a4e3\n")
    assert read_class_table(path) == [EXPECTED[2], EXPECTED[0], EXPECTED[1]]


def test_colour_map_exported_by_qgis(qgis_app, tmp_path):
    from qgis.core import QgsColorRampShader, QgsRasterRendererUtils

    path = tmp_path / "colours.txt"
    assert QgsRasterRendererUtils.saveColorMapFile(str(path), qgis_items(), QgsColorRampShader.Exact)
    assert path.read_text().startswith("# QGIS Generated Color Map Export File")
    assert read_class_table(path) == EXPECTED


def test_qml_style_saved_by_qgis(qgis_app, tmp_path, make_raster):
    from qgis.core import QgsPalettedRasterRenderer, QgsRasterLayer
    from qgis.PyQt.QtGui import QColor

    layer = QgsRasterLayer(str(make_raster("c.tif", np.zeros((1, 8, 8)))), "classes")
    classes = [QgsPalettedRasterRenderer.Class(c["value"], QColor(c["color"]), c["name"]) for c in EXPECTED]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
    path = tmp_path / "classes.qml"
    message, ok = layer.saveNamedStyle(str(path))
    assert ok, message
    assert read_class_table(path) == EXPECTED


@pytest.mark.parametrize("text, suffix, message", [
    ("0,clear,green\n", ".csv", r"line 1: colour 'green' is not of the form #rrggbb"),
    ("0,clear,#000000\n0,again,#ffffff\n", ".csv", r"value\(s\) \[0\] more than once"),
    ("value,name,colour\n", ".csv", r"lists no classes"),
    ("300,big,#000000\n", ".csv", r"300.*whole number from 0 to 254"),
    ("0,clear\n", ".csv", r"expected 'value, name, #rrggbb'"),
    ("0,0,0,300,255,clear\n", ".txt", r"component '300'"),
    ("<qgis><pipe><rasterrenderer type='singlebandgray'/></pipe></qgis>", ".qml", r"has no class colours"),
    ("<qgis><unclosed>", ".qml", r"not a readable QGIS style"),
])
def test_bad_tables_say_where_and_what(tmp_path, text, suffix, message):
    path = tmp_path / f"t{suffix}"
    path.write_text(text)
    with pytest.raises(ModelPackageError, match=message):
        read_class_table(path)


def test_missing_file_names_the_formats(tmp_path):
    with pytest.raises(ModelPackageError, match=r"does not exist.*CSV.*\.qml"):
        read_class_table(tmp_path / "nope.csv")


@pytest.fixture(scope="module")
def unet_state_dict(tmp_path_factory) -> Path:
    """A plain state dict of an smp U-Net (resnet18, 3 bands, 3 classes): no pickle, no trust needed."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "unet.pt"
    torch.save(smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=3).state_dict(), path)
    return path


def create(tmp_path: Path, weights: Path, **extra) -> dict:
    import processing

    return processing.run("deepraster:create_package", {
        "WEIGHTS": str(weights), "FRAMEWORK": "smp", "ARCH": "Unet", "ENCODER": "resnet18", "BANDS": "B04,B03,B02",
        "TILE_SIZE": 64, "OVERLAP": 16, "NAME": "three", "LICENSE": "CC-BY-4.0",
        "OUTPUT": str(tmp_path / "three.drpk"), **extra})


def test_create_package_takes_classes_from_a_file(qgis_app, tmp_path, unet_state_dict, make_raster):
    import processing
    from osgeo import gdal

    table = tmp_path / "classes.csv"
    table.write_text("".join(f"{c['value']},{c['name']},{c['color']}\n" for c in EXPECTED))
    created = create(tmp_path, unet_state_dict, CLASSES_FILE=str(table))
    package = open_model(created["OUTPUT"])
    assert [(c.value, c.name, c.color) for c in package.classes] == [tuple(c.values()) for c in EXPECTED]
    raster = make_raster("r.tif", smooth_field(3, 64, 64), descriptions=("B04", "B03", "B02"))
    out = processing.run("deepraster:classify_pixels", {"INPUT": str(raster), "MODEL": created["OUTPUT"],
                                                        "OUTPUT_CLASSES": str(tmp_path / "c.tif")})
    assert set(np.unique(gdal.Open(out["OUTPUT_CLASSES"]).ReadAsArray())) <= {0, 1, 4}


def test_classes_given_twice_or_not_at_all_are_refused(qgis_app, tmp_path, unet_state_dict):
    from qgis.core import QgsProcessingException

    table = tmp_path / "classes.csv"
    table.write_text("0,a,#000000\n1,b,#ffffff\n2,c,#ff0000\n")
    with pytest.raises(QgsProcessingException, match="given twice"):
        create(tmp_path, unet_state_dict, CLASSES_FILE=str(table), CLASSES=[0, "a", "#000000"])
    with pytest.raises(QgsProcessingException, match="class file"):
        create(tmp_path, unet_state_dict)
    assert not (tmp_path / "three.drpk").exists()
