"""Findable and headless-friendly algorithms: search tags, a help page per algorithm, short descriptions, the
parameter order of the dialogs, enum values by number or text, warnings as warnings and nothing written beside the
inputs (through the real ``qgis_process``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPO

ALGORITHMS = ("classify_pixels", "apply_model", "extract_features", "reduce_dimensions", "cluster_pixels",
              "similarity_map", "train_classifier", "create_package", "inspect_package", "evaluate_classes",
              "export_training_data", "train_segmentation", "detect_change",
              "detect_objects", "classify_objects", "run_collection", "export_object_training_data",
              "train_detector", "export_object_classification_data", "train_object_classifier")
DOCS_PREFIX = "https://github.com/deepraster/deepraster/blob/main/"


@pytest.fixture(scope="module")
def provider(qgis_app):
    from qgis.core import QgsApplication

    return QgsApplication.processingRegistry().providerById("deepraster")


@pytest.mark.parametrize("name", ALGORITHMS)
def test_tags_help_and_description(provider, name):
    alg = provider.algorithm(name)
    assert alg is not None, name
    assert len(alg.tags()) >= 5 and all(tag.strip() for tag in alg.tags())
    assert 20 < len(alg.shortDescription()) <= 120 and "\n" not in alg.shortDescription()
    url = alg.helpUrl()
    assert url == f"{DOCS_PREFIX}docs/algorithms/{name}.md"
    page = (REPO / url.removeprefix(DOCS_PREFIX)).read_text(encoding="utf-8")
    assert page.startswith(f"# {alg.displayName()}")
    assert f"deepraster:{name}" in page and "## Parameters" in page and "## Example" in page
    for definition in alg.parameterDefinitions():  # every parameter documented
        assert f"`{definition.name()}`" in page, (name, definition.name())


def test_every_registered_algorithm_has_a_help_page(provider):
    for alg in provider.algorithms():
        page = REPO / alg.helpUrl().removeprefix(DOCS_PREFIX)
        assert page.is_file(), f"{alg.id()}: {page} is missing"


def test_search_words_a_new_user_types(provider):
    words = {tag.lower() for tag in provider.algorithm("classify_pixels").tags()}
    assert {"segmentation", "classification", "cloud", "unet", "deep learning", "pytorch", "sentinel"} <= words


def test_classify_dialog_order(provider):
    """Input, model and outputs first; trust, NDWI and tiling under "Advanced parameters"."""
    from qgis.core import QgsProcessingParameterDefinition

    alg = provider.algorithm("classify_pixels")
    main = [d.name() for d in alg.parameterDefinitions()
            if not d.flags() & QgsProcessingParameterDefinition.FlagAdvanced]
    assert main[:2] == ["INPUT", "MODEL"]
    assert {"OUTPUT_CLASSES", "OUTPUT_PROBABILITIES"} <= set(main)
    advanced = {"TRUST", "MASK", "GREEN_BAND", "NIR_BAND", "NDWI_THRESHOLD", "TILE_SIZE", "OVERLAP", "BATCH_SIZE"}
    assert not advanced & set(main)
    model = alg.parameterDefinition("MODEL")
    assert "folder" not in model.description().lower()  # the picker picks files only: the label says so


def test_create_package_essentials_first(provider):
    from qgis.core import QgsProcessingParameterDefinition

    alg = provider.algorithm("create_package")
    main = [d.name() for d in alg.parameterDefinitions()
            if not d.flags() & QgsProcessingParameterDefinition.FlagAdvanced]
    assert main == ["WEIGHTS", "TASK", "FRAMEWORK", "ARCH", "ENCODER", "BANDS", "CLASSES", "CLASSES_FILE",
                    "VALUE_SCALE", "NAME", "LICENSE", "OUTPUT"]


def _qgis_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "scripts" / "qgis_process"), *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def input_folder(tmp_path, s2_30m) -> Path:
    """A folder holding only a copy of the 30 m scene's GeoTIFF (no .aux.xml) and a 128 × 96 px corner of it."""
    from osgeo import gdal

    folder = tmp_path / "inputs"
    folder.mkdir()
    shutil.copy(s2_30m, folder / "scene.tif")
    gdal.Translate(str(folder / "corner.tif"), str(s2_30m), srcWin=[0, 0, 128, 96])
    return folder


@pytest.mark.parametrize("method", ["0", "1", "KMeans", "minibatchkmeans"])
def test_enum_by_number_or_text_and_nothing_beside_the_input(input_folder, tmp_path, method):
    before = sorted(os.listdir(input_folder))
    out = tmp_path / "clusters.tif"
    proc = _qgis_process("run", "deepraster:cluster_pixels", "--", f"INPUT={input_folder / 'scene.tif'}",
                         f"METHOD={method}", "N_CLUSTERS=3", "SAMPLE_SIZE=200", f"OUTPUT={out}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert out.is_file()
    assert sorted(os.listdir(input_folder)) == before  # no .aux.xml statistics left beside the input


def test_help_lists_the_numbers_that_run_accepts():
    proc = _qgis_process("help", "deepraster:train_classifier")
    assert proc.returncode == 0, proc.stderr
    assert "0: RandomForest" in proc.stdout


def test_warning_of_a_successful_run_is_not_an_error(input_folder, tmp_path, model_6b_l1c):
    """128 px tiles differ from the 256 px the model was trained on: a warning, and the run succeeds."""
    before = sorted(os.listdir(input_folder))
    proc = _qgis_process("run", "deepraster:classify_pixels", "--", f"INPUT={input_folder / 'corner.tif'}",
                         f"MODEL={model_6b_l1c}", "TILE_SIZE=128", "DEVICE=cpu",
                         f"OUTPUT_CLASSES={tmp_path / 'classes.tif'}", f"OUTPUT_PROBABILITIES={tmp_path / 'p.tif'}")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "WARNING:\tTile size 128 px differs" in log
    assert "ERROR" not in log
    assert log.index("Classify pixels: reading corner.tif…") < log.index("WARNING")  # the first line of the run
    assert sorted(os.listdir(input_folder)) == before
    from osgeo import gdal  # the class names live in the output's .aux.xml, which qgis_process must still write

    band = (classes := gdal.Open(str(tmp_path / "classes.tif"))).GetRasterBand(1)
    assert classes is not None and band.GetNoDataValue() == 255  # (GDAL 3.6 loads the .aux.xml on such calls)
    assert band.GetCategoryNames()[:3] == ["clear", "cloud", "cloud shadow"]


def test_metadata_only_in_an_aux_xml_is_still_read(tmp_path, s2_30m, model_6b_l1c):
    """An input whose band names live only in its .aux.xml (as GDAL writes them for formats that cannot hold them)
    keeps them under qgis_process: the band names are matched with the model's, and the .aux.xml keeps them."""
    from osgeo import gdal

    scene = tmp_path / "scene.tif"
    gdal.Translate(str(scene), str(s2_30m), srcWin=[0, 0, 128, 96])  # closed when the returned dataset goes
    source = gdal.Open(str(scene))
    names = [source.GetRasterBand(i + 1).GetDescription() for i in range(source.RasterCount)]
    plain = tmp_path / "plain.tif"  # the same pixels, no band names in the TIFF
    gdal.Translate(str(plain), source, creationOptions=["PROFILE=BASELINE"])
    source = None
    for i in range(len(names)):
        ds = gdal.Open(str(plain))
        assert not ds.GetRasterBand(i + 1).GetDescription()
        ds = None
    (tmp_path / "plain.tif.aux.xml").unlink(missing_ok=True)  # GDAL's own (PROFILE=BASELINE) metadata
    aux = tmp_path / "plain.tif.aux.xml"
    bands = "".join(f'<PAMRasterBand band="{i + 1}"><Description>{n}</Description></PAMRasterBand>'
                    for i, n in enumerate(names))
    aux.write_text(f"<PAMDataset>{bands}</PAMDataset>", encoding="utf-8")
    before = aux.read_bytes()
    out = tmp_path / "classes.tif"
    proc = _qgis_process("run", "deepraster:classify_pixels", "--", f"INPUT={plain}", f"MODEL={model_6b_l1c}",
                         f"OUTPUT_CLASSES={out}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert out.is_file()
    after = aux.read_text(encoding="utf-8")  # QGIS may add the band statistics it computed when loading the layer
    assert all(f"<Description>{n}</Description>" in after for n in names), (before, after)
