"""Helpers shared by the tests: paths of the real data and small raster generators (importable as ``helpers``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".data"
S2_10M = DATA / "s2" / "s2_l1c_10m.tif"
S2_30M = DATA / "s2" / "s2_l1c_30m.tif"
MODEL_6B_L1C = DATA / "models" / "ukis-csmask-6b-l1c"
MODEL_4B_L1C = DATA / "models" / "ukis-csmask-4b-l1c"
S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")


def write_raster(path: Path, data: np.ndarray, *, geotransform=(500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0),
                 epsg: int = 32633, nodata: float | None = None, descriptions: tuple[str, ...] = (),
                 creation_options: tuple[str, ...] = ("TILED=YES", "COMPRESS=DEFLATE")) -> Path:
    """Write ``data`` (bands, rows, cols) as a GeoTIFF with the given georeferencing; returns ``path``."""
    from osgeo import gdal, gdal_array, osr

    gdal.UseExceptions()
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    ds = gdal.GetDriverByName("GTiff").Create(str(path), data.shape[2], data.shape[1], data.shape[0],
                                              gdal_array.NumericTypeCodeToGDALTypeCode(data.dtype),
                                              list(creation_options))
    ds.SetGeoTransform(geotransform)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds.SetProjection(srs.ExportToWkt())
    for i in range(data.shape[0]):
        band = ds.GetRasterBand(i + 1)
        band.WriteArray(data[i])
        if nodata is not None:
            band.SetNoDataValue(nodata)
        if i < len(descriptions):
            band.SetDescription(descriptions[i])
    ds = None
    return path


def smooth_field(bands: int, rows: int, cols: int, dtype=np.uint16, seed: int = 0) -> np.ndarray:
    """A smooth, deterministic multi-band pattern (sums of sines), scaled like Sentinel-2 digital numbers."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    out = np.empty((bands, rows, cols), dtype=np.float32)
    for b in range(bands):
        fx, fy, phase = rng.uniform(0.01, 0.06), rng.uniform(0.01, 0.06), rng.uniform(0, 6.28)
        out[b] = 2000 + 1500 * np.sin(xx * fx + phase) * np.cos(yy * fy - phase)
    return out.astype(dtype)


def cloud_mask_model(package: Path):
    """A Model Builder model (needs a QgsApplication): input raster "scene" → Classify pixels with ``package`` →
    model output "mask" (the class raster)."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )

    model = QgsProcessingModelAlgorithm("cloud mask", "deepraster tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("scene", "Scene"), QgsProcessingModelParameter("scene"))
    child = QgsProcessingModelChildAlgorithm("deepraster:classify_pixels")
    child.setChildId("classify")
    child.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("scene")])
    child.addParameterSources("MODEL", [QgsProcessingModelChildParameterSource.fromStaticValue(str(package))])
    output = QgsProcessingModelOutput("mask", "Cloud mask")
    output.setChildOutputName("OUTPUT_CLASSES")
    child.setModelOutputs({"mask": output})
    model.addChildAlgorithm(child)
    return model


def write_blocked_raster(path: Path, data: np.ndarray, *, block: int = 64, **kwargs) -> Path:
    """Like :func:`write_raster`, uncompressed with TIFF blocks of ``block`` pixels (many windows on a small raster)."""
    return write_raster(path, data, creation_options=("TILED=YES", f"BLOCKXSIZE={block}", f"BLOCKYSIZE={block}"),
                        **kwargs)


def write_vector(path: Path, geometries_wkt: list[str], fields: dict[str, list] | None = None,
                 epsg: int = 32633) -> Path:
    """A GeoPackage layer from WKT geometries and attribute columns (str, int or float, by the first value;
    None for NULL)."""
    from osgeo import ogr, osr

    ogr.UseExceptions()
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    geom_type = ogr.CreateGeometryFromWkt(geometries_wkt[0]).GetGeometryType()
    layer = ds.CreateLayer(path.stem, srs=srs, geom_type=geom_type)
    types = {str: ogr.OFTString, int: ogr.OFTInteger, float: ogr.OFTReal}
    for name, values in (fields or {}).items():
        first = next((v for v in values if v is not None), "")
        layer.CreateField(ogr.FieldDefn(name, types[type(first)]))
    for i, wkt in enumerate(geometries_wkt):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        for name, values in (fields or {}).items():
            if values[i] is not None:
                feature.SetField(name, values[i])
        layer.CreateFeature(feature)
    ds = None
    return path


def analysis_chain_model(package: Path | None = None):
    """A Model Builder model (needs a QgsApplication): input raster "scene" → [Extract deep features with the
    segmentation package's encoder, stride 8, when ``package`` is given] → Reduce dimensions (PCA, 3 components) →
    Cluster pixels (k-means, 5 clusters) → model output "clusters"."""
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )

    static = QgsProcessingModelChildParameterSource.fromStaticValue
    model = QgsProcessingModelAlgorithm("features to clusters", "deepraster tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("scene", "Scene"), QgsProcessingModelParameter("scene"))
    previous = QgsProcessingModelChildParameterSource.fromModelParameter("scene")
    steps = [("reduce_dimensions", "pca", {"N_COMPONENTS": 3, "SAMPLE_SIZE": 1500}),
             ("cluster_pixels", "kmeans", {"N_CLUSTERS": 5, "SAMPLE_SIZE": 1500})]
    if package is not None:
        steps.insert(0, ("extract_features", "features", {"ENCODER": 0, "MODEL": str(package), "STRIDE": 1}))
    for alg, child_id, params in steps:
        child = QgsProcessingModelChildAlgorithm(f"deepraster:{alg}")
        child.setChildId(child_id)
        child.addParameterSources("INPUT", [previous])
        for name, value in params.items():
            child.addParameterSources(name, [static(value)])
        if child_id == "kmeans":
            output = QgsProcessingModelOutput("clusters", "Clusters")
            output.setChildOutputName("OUTPUT")
            child.setModelOutputs({"clusters": output})
        model.addChildAlgorithm(child)
        previous = QgsProcessingModelChildParameterSource.fromChildOutput(child_id, "OUTPUT")
    return model


def recording_feedback():
    """A QgsProcessingFeedback that keeps every info, warning and error line in ``messages``."""
    from qgis.core import QgsProcessingFeedback

    class Recording(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.messages: list[str] = []

        def pushInfo(self, info):  # noqa: N802 (QGIS API)
            self.messages.append(info)

        def pushWarning(self, warning):  # noqa: N802 (QGIS API)
            self.messages.append(warning)

        def reportError(self, error, fatalError=False):  # noqa: N802, N803 (QGIS API)
            self.messages.append(error)

    return Recording()


def utm_to_wgs84(epsg: int = 32633):
    """An OSR transformation from UTM ``epsg`` to EPSG:4326, both in x = easting / longitude order."""
    from osgeo import osr

    utm, wgs84 = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(epsg)
    wgs84.ImportFromEPSG(4326)
    for srs in (utm, wgs84):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return osr.CoordinateTransformation(utm, wgs84)


def torchscript_package(folder: Path, module, weights: str, name: str, task: str, bands: list[str], classes: list,
                        inference: dict, **changes) -> Path:
    """A package folder holding the scripted ``module`` as ``weights`` (its checksum recorded), ``len(classes)``
    output channels, raster values × 0.01 = model units; ``changes`` replace description keys."""
    import json

    import torch
    from deepraster.tiling.checksums import sha256_of

    folder.mkdir(parents=True, exist_ok=True)
    torch.jit.save(module, str(folder / weights))
    description = {
        "format": "deepraster-model-package", "format_version": "1.0", "name": name, "license": "CC0-1.0",
        "task": task,
        "architecture": {"framework": "torchscript", "in_channels": len(bands), "out_channels": len(classes)},
        "weights": {"file": weights, "format": "torchscript", "sha256": sha256_of(folder / weights)},
        "input": {"bands": bands, "value_scale": 0.01}, "inference": inference, "classes": classes, **changes,
    }
    (folder / "model.json").write_text(json.dumps(description), encoding="utf-8")
    return folder


def assert_killed_run_resumes(train, request_for, killed_script: str, data: Path, tmp_path: Path, first,
                              timeout_s: float = 600) -> None:
    """Kill a training run mid-epoch (``killed_script`` run with ``data`` and the package path: it must die by
    SIGKILL after its first checkpoint), start it again with ``train(request_for(package), callbacks)`` and check it
    resumes after epoch 1 to the final weights and losses of the uninterrupted run ``first``; nothing is published
    by the killed run and its one checkpoint is what the resumed run starts from."""
    import signal
    import subprocess
    import sys

    from deepraster.tiling.callbacks import Callbacks

    package = tmp_path / "c.drpk"
    killed = subprocess.run([sys.executable, "-c", killed_script, str(data), str(package)], capture_output=True,
                            text=True, timeout=timeout_s)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not package.exists()
    assert len(list(tmp_path.glob(".c.drpk.training-*/checkpoint.pt"))) == 1
    lines: list[str] = []
    resumed = train(request_for(package), Callbacks(info=lines.append))
    assert resumed.resumed_from == 1 and any(line.startswith("Resuming after epoch 1") for line in lines)
    assert resumed.final_weights_sha256 == first.final_weights_sha256
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in first.history]


def description_only_packages(folder: Path) -> dict[str, Path]:
    """Packages whose descriptions name other inference defaults than the demo package's (256 px tiles, 52 px
    overlap, value scale 0.0001), without weights (only their descriptions can be read): ``drpk`` (a ``.drpk``
    holding a 512 px / 96 px / 0.001 model.json in a single top folder), ``emd`` (an Esri ``.emd``, 320 px chips,
    ModelPadding 40 = 80 px overlap, scale 1) and ``dlpk`` (that ``.emd`` in a ``.dlpk``)."""
    import json
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    description = json.loads((MODEL_6B_L1C / "model.json").read_text(encoding="utf-8"))
    description.pop("training", None)
    description["inference"].update(tile_size=512, overlap=96)
    description["input"]["value_scale"] = 0.001
    drpk = folder / "other.drpk"
    with zipfile.ZipFile(drpk, "w") as z:
        z.writestr("other/model.json", json.dumps(description))
    emd = folder / "chips.emd"
    emd.write_text(json.dumps({"Framework": "PyTorch", "ModelType": "ImageClassification", "ImageHeight": 320,
                               "ImageWidth": 320, "ModelPadding": 40}), encoding="utf-8")
    dlpk = folder / "chips.dlpk"
    with zipfile.ZipFile(dlpk, "w") as z:
        z.write(emd, emd.name)
    return {"drpk": drpk, "emd": emd, "dlpk": dlpk}


def make_read_only(folder: Path) -> bool:
    """Make ``folder`` unwritable, for root too (``chattr +i``); False when that is impossible here."""
    folder.chmod(0o555)
    if os.geteuid() != 0:
        return True
    return subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


def make_writable(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    folder.chmod(0o755)
