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
from ..models.runtimes import RUNTIMES
from ..models.sources import MODEL_FILE_FILTER, open_model
from ..tiling.outputs import ClassInfo
from ..tiling.source import RasterSource
from .band_parameters import band_numbers
from .base import TiledModelAlgorithm, callbacks_for
from .execution import backend_value, execution_parameters
from .package_default_widgets import show_package_defaults
from .styling import ClassStyle, ProbabilityStyle, output_name, style_on_load

GREEN_NAMES = ("B03", "B3", "green")
NIR_NAMES = ("B08", "B8", "nir")


class ClassifyPixelsAlgorithm(TiledModelAlgorithm):
    search_tags = ("segmentation", "semantic segmentation", "classification", "land cover", "cloud", "cloud mask",
                   "unet", "deep learning", "pytorch", "sentinel", "model package", "inference")
    summary = "Classifies every pixel of a raster with a deep-learning segmentation model package (e.g. a cloud mask)."
    MODEL = "MODEL"
    TRUST = "TRUST"
    MASK = "MASK"
    GREEN_BAND = "GREEN_BAND"
    NIR_BAND = "NIR_BAND"
    NDWI_THRESHOLD = "NDWI_THRESHOLD"
    PROBABILITY_TYPE = "PROBABILITY_TYPE"
    TTA = "TTA"
    RUNTIME = "RUNTIME"
    OUTPUT_CLASSES = "OUTPUT_CLASSES"
    OUTPUT_PROBABILITIES = "OUTPUT_PROBABILITIES"

    MASK_OPTIONS = ("No mask", "Keep water (NDWI ≥ threshold)", "Keep land (NDWI < threshold)")
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
            "Model: a model.json (a package folder can also be typed in), a .drpk, or an Esri .emd / .dlpk.\n"
            "Bands: left empty, the model's band names are matched with the raster's band descriptions (e.g. B02, "
            "B03 ...); otherwise give the band numbers in the model's order (in the band list, tick the bands and drag "
            "them into that order; on the command line BANDS=4,3,2).\n"
            "The first lines of the log say what the run uses: model, device, bands, tile size and overlap.\n"
            "Output layers: the class raster on top, named after the input and the model; the probability raster "
            "below it, hidden, as a ramp of one class's probability.\n"
            "NDWI mask (advanced): optionally keep only water or only land; masked pixels become nodata.\n"
            "Nodata pixels of the input come out as nodata; tiles without a valid pixel are skipped.\n"
            "Advanced: tile size and overlap default to the package's values, the conditions the model was trained "
            "under (another tile size runs, with a warning in the log); device 'auto' uses a CUDA GPU "
            "when PyTorch sees one; 'Input value scale' overrides the package's scale (raster values × scale = "
            "model units, e.g. 0.0001 for Sentinel-2 digital numbers); 'Test-time augmentation' averages the "
            "probabilities of each tile and its 7 flips / quarter turns (8× the model time); 'Runtime' auto runs "
            "the model on ONNX Runtime when it is installed (exported once per package and checked against PyTorch; "
            "faster, less memory), else on PyTorch."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        # main: what every run needs (input, model, outputs); the rest has working defaults, under "Advanced"
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Input raster")))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, self.tr("Model package (.drpk, .json, .emd, .dlpk)"),
            behavior=QgsProcessingParameterFile.File, fileFilter=MODEL_FILE_FILTER))
        self.addParameter(self.model_bands_parameter())
        self.addParameter(QgsProcessingParameterExtent(
            self.EXTENT, self.tr("Extent (empty: whole raster)"), optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_CLASSES, self.tr("Class raster")))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_PROBABILITIES, self.tr("Probability raster"), optional=True, createByDefault=True))
        self.add_advanced([
            QgsProcessingParameterBoolean(self.TRUST, self.tr("I trust this model file (pickles can run code)"),
                                          False),
            QgsProcessingParameterEnum(self.MASK, self.tr("Water/land mask from NDWI"),
                                       options=list(self.MASK_OPTIONS), defaultValue=0),
            QgsProcessingParameterBand(self.GREEN_BAND, self.tr("NDWI green band (empty: band B03)"),
                                       parentLayerParameterName=self.INPUT, optional=True),
            QgsProcessingParameterBand(self.NIR_BAND, self.tr("NDWI NIR band (empty: band B08)"),
                                       parentLayerParameterName=self.INPUT, optional=True),
            QgsProcessingParameterNumber(self.NDWI_THRESHOLD, self.tr("NDWI threshold"),
                                         QgsProcessingParameterNumber.Double, 0.0, minValue=-1.0, maxValue=1.0),
            *show_package_defaults([*self.tiling_parameters("the package's", "the package's"),
                                    self.value_scale_parameter()]),
            QgsProcessingParameterEnum(self.PROBABILITY_TYPE, self.tr("Probability raster type"),
                                       options=list(self.PROBABILITY_TYPES), defaultValue=0),
            QgsProcessingParameterBoolean(self.TTA, self.tr("Test-time augmentation"), False),
            QgsProcessingParameterEnum(self.RUNTIME, self.tr("Runtime (auto: ONNX Runtime when installed)"),
                                       options=list(RUNTIMES), defaultValue=0),
            *execution_parameters(self.tr),
        ])

    def run_algorithm(self, parameters, context, feedback) -> dict:
        package = open_model(self.parameterAsFile(parameters, self.MODEL, context))
        layer, source, region = self.input_source(parameters, context)
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
            bands=tuple(band_numbers(self, parameters, self.BANDS, context)) or None,
            region=region,
            ndwi=self._ndwi(parameters, context, source),
            value_scale=scale or None,
            trusted=self.parameterAsBool(parameters, self.TRUST, context),
            tta=self.parameterAsBool(parameters, self.TTA, context),
            runtime=RUNTIMES[self.parameterAsEnum(parameters, self.RUNTIME, context)],
            **self.tiling_values(parameters, context),
        )
        backend = backend_value(self, parameters, context)
        if backend.distributed:
            from ..scale.tiled import classify_on_cluster

            stats = classify_on_cluster(request, backend, callbacks_for(feedback))
        else:
            stats = classify_raster(request, callbacks_for(feedback))
        feedback.pushInfo(f"{stats.tiles_predicted} tiles predicted, {stats.tiles_skipped} skipped (no valid "
                          f"pixel); {stats.total_seconds:.1f} s, {100 * stats.efficiency:.0f} % in the model.")
        classes = [ClassInfo(c.value, c.name, c.rgb) for c in package.classes]
        # the class layer on top; the probabilities below it, hidden, as a ramp of one class (the second: the first
        # is usually the background), never as an RGB of three classes that contradicts the class colours
        style_on_load(context, classes_path, ClassStyle(classes, above=probabilities_path or None),
                      output_name(layer, f"{package.name} classes"), sort_key=1)
        shown = 1 if package.is_binary_sigmoid or len(classes) < 2 else 2
        style_on_load(context, probabilities_path, ProbabilityStyle(shown, 100.0 if percent else 1.0,
                                                                    below=classes_path or None),
                      output_name(layer, f"{package.name} probabilities"), sort_key=2)
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
