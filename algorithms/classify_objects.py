"""Processing algorithm "Classify objects": each feature of a point or polygon layer classified by an
image-classification model package from a chip of the raster around it, into a copy of the layer with class value,
class name and confidence. The core is :func:`objects.classify.classify_objects`."""

from __future__ import annotations

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessing,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsVectorFileWriter,
)

from ..models.sources import open_model
from ..tiling.outputs import ClassInfo
from .base import callbacks_for
from .objects_common import ObjectModelAlgorithm
from .package_default_widgets import show_package_defaults
from .styling import CategoryStyle, output_name, style_on_load


class ClassifyObjectsAlgorithm(ObjectModelAlgorithm):
    search_tags = ("object classification", "image classification", "classify features", "points", "polygons",
                   "tree crowns", "alive dead", "chips", "deep learning", "pytorch", "timm", "torchscript",
                   "model package", "inference")
    summary = "Classifies each point or polygon of a layer from the imagery under it with a classification package."
    FEATURES = "FEATURES"
    BUFFER = "BUFFER"
    CHIP_PIXELS = "CHIP_PIXELS"
    FIELD_PREFIX = "FIELD_PREFIX"
    TRUST = "TRUST"

    def name(self) -> str:
        return "classify_objects"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Classify objects")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Classifies each feature of a point or polygon layer (e.g. tree crowns as alive or dead, buildings by "
            "roof type) from the raster under it, with an image-classification model package (task "
            "image_classification: a timm or TorchScript classifier, its bands, normalisation, chip size and "
            "classes), and writes a copy of the layer to a GeoPackage with class value, class name and confidence, "
            "styled with the package's class colours.\n\n"
            "The chip: the feature's extent made square plus the buffer (map units of the raster's CRS) on every "
            "side, or, with a chip size in pixels, that many raster pixels centred on the feature (points without a "
            "buffer: the package's chip size). It is resampled to the package's chip size; nodata and pixels off "
            "the raster carry no weight. The layer may be in any CRS (it is reprojected to the raster's).\n\n"
            "Features outside the raster, on nodata, or with empty or invalid geometries keep NULL class fields and "
            "are counted in the log. Chips are classified in batches and written at once, so memory does not grow "
            "with the number of features."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, self.tr("Input raster")))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.FEATURES, self.tr("Points or polygons to classify"),
            [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon]))
        self.addParameter(self.model_parameter())
        self.addParameter(QgsProcessingParameterNumber(
            self.BUFFER, self.tr("Buffer around each feature (raster CRS units)"),
            QgsProcessingParameterNumber.Double, 0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.CHIP_PIXELS, self.tr("Chip size, raster px (0: feature extent + buffer)"),
            QgsProcessingParameterNumber.Integer, 0, minValue=0, maxValue=100000))
        self.addParameter(self.vector_output(self.tr("Classified features")))
        compute = [p for p in self.tiling_parameters("", "") if p.name() in (self.DEVICE, self.HALF)]
        self.add_advanced([
            QgsProcessingParameterString(self.FIELD_PREFIX, self.tr("Prefix of the class fields"), "",
                                         optional=True),
            self.model_bands_parameter(),
            QgsProcessingParameterNumber(self.BATCH_SIZE, self.tr("Batch size (chips per model call)"),
                                         QgsProcessingParameterNumber.Integer, 32, minValue=1, maxValue=4096),
            *compute,
            *show_package_defaults([self.value_scale_parameter()]),
            QgsProcessingParameterBoolean(self.TRUST, self.tr("I trust this model file (pickles can run code)"),
                                          False),
        ])

    def run_algorithm(self, parameters, context, feedback) -> dict:
        from ..objects.classify import ClassifyObjectsRequest, classify_objects

        package = open_model(self.parameterAsFile(parameters, self.MODEL, context))
        layer, source, _ = self.input_source(parameters, context)
        features = self.parameterAsSource(parameters, self.FEATURES, context)
        path, layer_name = self.parameterAsCompatibleSourceLayerPathAndLayerName(
            parameters, self.FEATURES, context, QgsVectorFileWriter.supportedFormatExtensions(), "gpkg", feedback)
        crs = features.sourceCrs() if features is not None else QgsCoordinateReferenceSystem()
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        prefix = self.parameterAsString(parameters, self.FIELD_PREFIX, context) or ""
        request = ClassifyObjectsRequest(
            raster=source.path, package=package, features=path, output=output, layer_name=layer_name or None,
            features_crs=crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED_GDAL) if crs.isValid() else None,
            buffer=self.parameterAsDouble(parameters, self.BUFFER, context),
            chip_pixels=self.parameterAsInt(parameters, self.CHIP_PIXELS, context) or None,
            **self.model_input_values(parameters, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            device=self.DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            half=self.parameterAsBool(parameters, self.HALF, context),
            trusted=self.parameterAsBool(parameters, self.TRUST, context),
            field_prefix=prefix,
        )
        stats = classify_objects(request, callbacks_for(feedback))
        counts = ", ".join(f"{name} {n}" for name, n in sorted(stats.per_class.items()))
        feedback.pushInfo(f"{stats.classified} of {stats.features} features classified ({counts}); "
                          f"{stats.batches} model calls; {stats.seconds:.1f} s.")
        classes = [ClassInfo(c.value, c.name, c.rgb) for c in package.classes]
        what = f"{package.name} classes of {features.sourceName() if features is not None else 'features'}"
        style_on_load(context, output, CategoryStyle(classes, f"{prefix}class_value", "not classified"),
                      output_name(layer, what))
        return {self.OUTPUT: output}
