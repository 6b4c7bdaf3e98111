"""Processing algorithm "Classify pixels": a segmentation model package applied to a raster of any size."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..models.bands import find_band
from ..models.errors import BandMappingError
from ..models.pixel_classification import ClassifyRequest, NdwiMask, classify_raster
from ..models.sources import MODEL_FILE_FILTER, open_model
from ..tiling.outputs import ClassInfo
from ..tiling.source import RasterSource
from .base import TiledModelAlgorithm, callbacks_for
from .styling import ClassStyle, ProbabilityStyle, style_on_load

GREEN_NAMES = ("B03", "B3", "green")
NIR_NAMES = ("B08", "B8", "nir")


class ClassifyPixelsAlgorithm(TiledModelAlgorithm):
    MODEL = "MODEL"
    TRUST = "TRUST"
    BANDS = "BANDS"
    MASK = "MASK"
    GREEN_BAND = "GREEN_BAND"
    NIR_BAND = "NIR_BAND"
    NDWI_THRESHOLD = "NDWI_THRESHOLD"
    VALUE_SCALE = "VALUE_SCALE"
    PROBABILITY_TYPE = "PROBABILITY_TYPE"
    OUTPUT_CLASSES = "OUTPUT_CLASSES"
    OUTPUT_PROBABILITIES = "OUTPUT_PROBABILITIES"

    MASK_OPTIONS = ("No mask", "Keep water (NDWI ≥ threshold), land becomes nodata",
                    "Keep land (NDWI < threshold), water becomes nodata")
    PROBABILITY_TYPES = ("float32, 0–1 (nodata NaN)", "uint8 percent, 0–100 (nodata 255)")

    def name(self) -> str:
        return "classify_pixels"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Classify pixels")

    def group(self) -> str:
        return self.tr("Pixel classification")

    def groupId(self) -> str:  # noqa: N802 (QGIS API)
        return "pixel_classification"

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Classifies every pixel of a raster with a trained segmentation model (a Deep Raster model package: "
            "model.json beside its weights) and writes a class raster, styled with the model's class colours, and "
            "a probability raster with one band per class.\n\n"
            "The raster is processed in overlapping tiles that are blended with an edge-aware Hann window, so the "
            "result has no seams and covers every pixel, for rasters of any size, with memory bounded by one strip "
            "of tiles.\n\n"
            "Bands: left empty, the model's band names are matched with the raster's band descriptions (e.g. B02, "
            "B03 ...); otherwise give the band numbers in the model's order.\n"
            "NDWI mask: optionally keep only water or only land; masked pixels become nodata.\n"
            "Nodata pixels of the input come out as nodata; tiles without a valid pixel are skipped.\n"
            "Advanced: tile size and overlap default to the package's values; device 'auto' uses a CUDA GPU "
            "when PyTorch sees one; 'Input value scale' overrides the package's scale (raster values × scale = "
            "model units, e.g. 0.0001 for Sentinel-2 digital numbers)."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Input raster")))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, self.tr("Model package (model.json or its folder, .drpk, Esri .emd or .dlpk)"),
            behavior=QgsProcessingParameterFile.File, fileFilter=MODEL_FILE_FILTER))
        self.addParameter(QgsProcessingParameterBoolean(
            self.TRUST, self.tr("I trust this model file (allow a whole pickled PyTorch model: it can run code)"),
            False))
        self.addParameter(QgsProcessingParameterBand(
            self.BANDS, self.tr("Band numbers in the model's order (empty: match band names)"),
            parentLayerParameterName=self.INPUT, optional=True, allowMultiple=True))
        self.addParameter(QgsProcessingParameterExtent(
            self.EXTENT, self.tr("Processing extent (empty: whole raster)"), optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.MASK, self.tr("Water/land mask from NDWI"),
                                                     options=list(self.MASK_OPTIONS), defaultValue=0))
        self.addParameter(QgsProcessingParameterBand(
            self.GREEN_BAND, self.tr("Green band for NDWI (empty: band described B03/green)"),
            parentLayerParameterName=self.INPUT, optional=True))
        self.addParameter(QgsProcessingParameterBand(
            self.NIR_BAND, self.tr("Near-infrared band for NDWI (empty: band described B08/nir)"),
            parentLayerParameterName=self.INPUT, optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.NDWI_THRESHOLD, self.tr("NDWI threshold"), QgsProcessingParameterNumber.Double, 0.0,
            minValue=-1.0, maxValue=1.0))
        self.add_advanced([
            *self.tiling_parameters("the package's", "the package's"),
            QgsProcessingParameterNumber(self.VALUE_SCALE,
                                         self.tr("Input value scale (0: the package's; raster × scale = model units)"),
                                         QgsProcessingParameterNumber.Double, 0.0, minValue=0.0),
            QgsProcessingParameterEnum(self.PROBABILITY_TYPE, self.tr("Probability raster type"),
                                       options=list(self.PROBABILITY_TYPES), defaultValue=0),
        ])
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_CLASSES, self.tr("Class raster")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_PROBABILITIES, self.tr("Probability raster"), optional=True, createByDefault=True))

    def run_algorithm(self, parameters, context, feedback) -> dict:
        package = open_model(self.parameterAsFile(parameters, self.MODEL, context))
        _, source, region = self.input_source(parameters, context)
        classes_path = self.parameterAsOutputLayer(parameters, self.OUTPUT_CLASSES, context)
        probabilities_path = self.parameterAsOutputLayer(parameters, self.OUTPUT_PROBABILITIES, context)
        scale = self.parameterAsDouble(parameters, self.VALUE_SCALE, context)
        percent = self.parameterAsEnum(parameters, self.PROBABILITY_TYPE, context) == 1
        request = ClassifyRequest(
            raster=source.path,
            package=package,
            classes_path=classes_path or None,
            probabilities_path=probabilities_path or None,
            probabilities_percent=percent,
            bands=tuple(self.parameterAsInts(parameters, self.BANDS, context)) or None,
            region=region,
            ndwi=self._ndwi(parameters, context, source),
            value_scale=scale or None,
            trusted=self.parameterAsBool(parameters, self.TRUST, context),
            **self.tiling_values(parameters, context),
        )
        stats = classify_raster(request, callbacks_for(feedback))
        feedback.pushInfo(f"{stats.tiles_predicted} tiles predicted, {stats.tiles_skipped} skipped (no valid "
                          f"pixel); {stats.total_seconds:.1f} s, {100 * stats.efficiency:.0f} % in the model.")
        classes = [ClassInfo(c.value, c.name, c.rgb) for c in package.classes]
        style_on_load(context, classes_path, ClassStyle(classes), f"{package.name} classes")
        if len(classes) <= 2:  # one probability to show; with more, QGIS's RGB of the first three bands reads well
            style_on_load(context, probabilities_path, ProbabilityStyle(1 if package.is_binary_sigmoid else 2,
                                                                        100.0 if percent else 1.0),
                          f"{package.name} probabilities")
        return {self.OUTPUT_CLASSES: classes_path or None, self.OUTPUT_PROBABILITIES: probabilities_path or None}

    def _ndwi(self, parameters, context, source: RasterSource) -> NdwiMask | None:
        mode = self.parameterAsEnum(parameters, self.MASK, context)
        if mode == 0:
            return None
        green = self.parameterAsInt(parameters, self.GREEN_BAND, context) or find_band(source.descriptions,
                                                                                       GREEN_NAMES)
        nir = self.parameterAsInt(parameters, self.NIR_BAND, context) or find_band(source.descriptions, NIR_NAMES)
        if not green or not nir:
            raise BandMappingError(
                "The NDWI mask needs a green and a near-infrared band, and the raster's band descriptions do not name "
                "them (B03/green, B08/nir). Choose the green and NIR bands in the parameters."
            )
        return NdwiMask(green, nir, self.parameterAsDouble(parameters, self.NDWI_THRESHOLD, context),
                        "water" if mode == 1 else "land")
