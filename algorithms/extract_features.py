"""Processing algorithm "Extract deep features": a pretrained encoder applied to a raster → a feature raster."""

from __future__ import annotations

from qgis.core import (
    QgsContrastEnhancement,
    QgsMultiBandColorRenderer,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsRasterBandStats,
)

from ..models.encoder_registry import PRESETS
from ..models.errors import EncoderError
from ..models.feature_extraction import NORMALIZATION_SOURCES, FeatureRequest, extract_features
from ..models.sources import MODEL_FILE_FILTER, open_model
from .band_parameters import band_numbers
from .base import DEEP_LEARNING_PACKAGES, TiledModelAlgorithm, callbacks_for
from .execution import backend_value, execution_parameters
from .package_default_widgets import show_package_defaults
from .styling import style_on_load

PACKAGE_SOURCE, TIMM_SOURCE = 0, 1


class FeatureStyle(QgsProcessingLayerPostProcessorInterface):
    """RGB of the three features with the largest variance, each stretched to its mean ± 2 standard deviations
    (from the statistics the writer stored, so loading reads no pixels)."""

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        provider = layer.dataProvider()
        count = layer.bandCount()
        stats = [provider.bandStatistics(b, QgsRasterBandStats.All) for b in range(1, count + 1)]
        order = sorted(range(count), key=lambda i: -stats[i].stdDev)[:3]
        while len(order) < 3:
            order.append(order[-1])
        renderer = QgsMultiBandColorRenderer(provider, *(i + 1 for i in order))
        for i, setter in zip(order, (renderer.setRedContrastEnhancement, renderer.setGreenContrastEnhancement,
                                     renderer.setBlueContrastEnhancement), strict=True):
            enhancement = QgsContrastEnhancement(provider.dataType(i + 1))
            enhancement.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
            enhancement.setMinimumValue(stats[i].mean - 2 * stats[i].stdDev)
            enhancement.setMaximumValue(stats[i].mean + 2 * stats[i].stdDev)
            setter(enhancement)
        layer.setRenderer(renderer)
        layer.triggerRepaint()


class ExtractFeaturesAlgorithm(TiledModelAlgorithm):
    search_tags = ("features", "embedding", "encoder", "foundation model", "timm", "vit", "cnn", "deep learning",
                   "pytorch", "sentinel")
    summary = "Turns a raster into a feature raster (one band per feature) with a pretrained deep-learning encoder."
    ENCODER = "ENCODER"
    MODEL = "MODEL"
    TIMM_MODEL = "TIMM_MODEL"
    WEIGHTS = "WEIGHTS"
    BANDS = "BANDS"
    REDUCE_TO_RGB = "REDUCE_TO_RGB"
    STRIDE = "STRIDE"
    INT8 = "INT8"
    NORMALIZATION = "NORMALIZATION"
    OUTPUT_TYPE = "OUTPUT_TYPE"
    PAUSE = "PAUSE"
    RESUME = "RESUME"
    DOWNLOAD = "DOWNLOAD"
    OUTPUT = "OUTPUT"

    SOURCES = ("Model package (file below)", "timm model (name and weights below)",
               *(f"Preset: {p.label}" for p in PRESETS))
    STRIDES = ("Default (16; a ViT: its patch size)", "8", "16", "32")
    NORMALIZATION_OPTIONS = ("Auto (the model's if known, else raster)",
                             "The model's (package or pretrained)",
                             "Raster statistics (sampled mean, std)", "None")
    OUTPUT_TYPES = ("float32", "float16 (half the size)")

    required_packages = {**DEEP_LEARNING_PACKAGES, "timm": "timm"}

    def name(self) -> str:
        return "extract_features"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Extract deep features")

    def group(self) -> str:
        return self.tr("Feature extraction")

    def groupId(self) -> str:  # noqa: N802 (QGIS API)
        return "feature_extraction"

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        presets = "\n".join(f"• {p.label}: timm '{p.timm_name}'. {p.note}" for p in PRESETS)
        return self.tr(
            "Turns a raster into a feature raster with a pretrained encoder: one band per feature, coarser than "
            "the input by the encoder's output stride (pixel size × stride, same origin and CRS). Later tools "
            "reduce, cluster, compare and classify these features. Works on a laptop CPU, with rasters of any "
            "size (bounded memory, streaming output) and any number of bands.\n\n"
            "Encoders:\n"
            "• a model package: a feature-extraction package, or the encoder of a segmentation package (e.g. "
            "the ukis-csmask EfficientNet-B4, a pretrained multispectral encoder);\n"
            "• a timm model name with a local weights file (.safetensors, or a state dict .pth/.pt, never a pickled "
            "model). Vision Transformers give their patch tokens (class and register tokens dropped; stride = "
            "patch size, any tile size that is a multiple of it); CNNs give the stage with the chosen output "
            "stride (8, 16 or 32);\n"
            "• a preset below (it fills in the timm name; its weights file is still needed, or tick the download "
            "option when a network is available).\n\n"
            f"Presets:\n{presets}\n\n"
            "Bands: all bands by default (a package's bands are matched by name). RGB weights are adapted to any "
            "band count (timm adapt_input_conv), or tick 'Reduce to 3 bands with a PCA first' (fitted on a "
            "sample, whitened), which is often the most robust choice for RGB encoders on multispectral data.\n"
            "Normalisation: give the value scale (raster × scale = model units, e.g. 0.0001 for Sentinel-2 digital "
            "numbers, 1/255 is used for 8-bit rasters) to use the model's own normalisation; otherwise each band "
            "is standardised with the raster's statistics.\n\n"
            "Long runs: the run is checkpointed as it goes; after a cancel, a crash or a kill, run it again with "
            "the same parameters and output file (not a temporary output) and it continues where it stopped, "
            "with the same result. "
            "The pause between batches keeps the computer usable. int8 quantisation speeds up Vision Transformers "
            "on the CPU (CNN convolutions cannot be quantised dynamically); half precision is for CUDA GPUs.\n"
            "Output: float32 (or float16), lossless DEFLATE compression, nodata NaN where the input is nodata. "
            "The free disk space is checked before starting."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Input raster")))
        self.addParameter(QgsProcessingParameterEnum(self.ENCODER, self.tr("Encoder"), options=list(self.SOURCES),
                                                     defaultValue=PACKAGE_SOURCE))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, self.tr("Model package (.drpk, .json, .emd, .dlpk)"), optional=True,
            behavior=QgsProcessingParameterFile.File, fileFilter=MODEL_FILE_FILTER))
        self.addParameter(QgsProcessingParameterString(self.TIMM_MODEL, self.tr("timm model name"), optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.WEIGHTS, self.tr("Weights file (.safetensors, .pth)"), optional=True,
            behavior=QgsProcessingParameterFile.File,
            fileFilter=self.tr("Weights (*.safetensors *.pth *.pt *.bin);;All files (*)")))
        self.addParameter(QgsProcessingParameterBand(
            self.BANDS, self.tr("Bands (empty: all, or the package's)"),
            parentLayerParameterName=self.INPUT, optional=True, allowMultiple=True))
        self.addParameter(QgsProcessingParameterBoolean(
            self.REDUCE_TO_RGB, self.tr("Reduce to 3 bands by PCA (RGB encoders)"), False))
        self.addParameter(QgsProcessingParameterEnum(self.STRIDE, self.tr("Output stride of a CNN (px)"),
                                                     options=list(self.STRIDES), defaultValue=0))
        self.addParameter(QgsProcessingParameterExtent(
            self.EXTENT, self.tr("Extent (empty: whole raster)"), optional=True))
        self.add_advanced([
            *self.tiling_parameters("the encoder's default", "default, a quarter tile"),
            QgsProcessingParameterBoolean(self.INT8, self.tr("int8 dynamic quantisation on CPU (ViTs)"), False),
            *show_package_defaults([self.value_scale_parameter()]),
            QgsProcessingParameterEnum(self.NORMALIZATION, self.tr("Normalisation"),
                                       options=list(self.NORMALIZATION_OPTIONS), defaultValue=0),
            QgsProcessingParameterEnum(self.OUTPUT_TYPE, self.tr("Feature raster type"),
                                       options=list(self.OUTPUT_TYPES), defaultValue=0),
            QgsProcessingParameterNumber(self.PAUSE, self.tr("Pause after each batch (seconds)"),
                                         QgsProcessingParameterNumber.Double, 0.0, minValue=0.0, maxValue=600.0),
            QgsProcessingParameterBoolean(self.RESUME, self.tr("Checkpoint, and resume an interrupted run"), True),
            QgsProcessingParameterBoolean(self.DOWNLOAD, self.tr("Download weights (needs a network)"),
                                                  False),
            *execution_parameters(self.tr),
        ])
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.tr("Feature raster")))

    def run_algorithm(self, parameters, context, feedback) -> dict:
        _, source, region = self.input_source(parameters, context)
        raster = source.path
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        package, timm_name = None, None
        choice = self.parameterAsEnum(parameters, self.ENCODER, context)
        if choice == PACKAGE_SOURCE:
            path = self.parameterAsFile(parameters, self.MODEL, context)
            if not path:
                raise EncoderError("Encoder 'Model package' was chosen but no package was given: choose a "
                                   "model.json (or its folder), or another encoder.")
            package = open_model(path)
        elif choice == TIMM_SOURCE:
            timm_name = self.parameterAsString(parameters, self.TIMM_MODEL, context).strip()
            if not timm_name:
                raise EncoderError("Encoder 'timm model' was chosen but no timm model name was given.")
        else:
            timm_name = PRESETS[choice - 2].timm_name
        scale = self.parameterAsDouble(parameters, self.VALUE_SCALE, context)
        stride = self.parameterAsEnum(parameters, self.STRIDE, context)
        request = FeatureRequest(
            raster=raster,
            output=output,
            package=package,
            timm_model=timm_name,
            weights=self.parameterAsFile(parameters, self.WEIGHTS, context) or None,
            hub_download=self.parameterAsBool(parameters, self.DOWNLOAD, context),
            stride=int(self.STRIDES[stride]) if stride else None,
            bands=tuple(band_numbers(self, parameters, self.BANDS, context)) or None,
            reduce_to_rgb=self.parameterAsBool(parameters, self.REDUCE_TO_RGB, context),
            region=region,
            int8=self.parameterAsBool(parameters, self.INT8, context),
            value_scale=scale or None,
            normalization=NORMALIZATION_SOURCES[self.parameterAsEnum(parameters, self.NORMALIZATION, context)],
            float16=self.parameterAsEnum(parameters, self.OUTPUT_TYPE, context) == 1,
            pause_s=self.parameterAsDouble(parameters, self.PAUSE, context),
            resume=self.parameterAsBool(parameters, self.RESUME, context),
            **self.tiling_values(parameters, context),
        )
        backend = backend_value(self, parameters, context)
        if backend.distributed:
            from ..scale.tiled import extract_on_cluster

            if request.resume:
                feedback.pushInfo("A run on Dask does not checkpoint: an interrupted one starts again.")
            result = extract_on_cluster(request, backend, callbacks_for(feedback))
        else:
            result = extract_features(request, callbacks_for(feedback))
        stats = result.stats
        feedback.pushInfo(
            f"{stats.tiles_predicted} tiles encoded, {stats.tiles_skipped} skipped (no valid pixel)"
            + (f", {stats.tiles_resumed} done by the interrupted run" if stats.tiles_resumed else "")
            + f"; {stats.total_seconds:.1f} s, {100 * stats.efficiency:.0f} % in the model. Feature raster: "
            f"{result.shape[1]} × {result.shape[0]} px, {result.encoder.channels} bands."
        )
        style_on_load(context, output, FeatureStyle(),
                      self.layer_name(parameters, context, f"{result.encoder.name} features"))
        return {self.OUTPUT: output}
