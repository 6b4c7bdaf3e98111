"""What the feature-space analysis algorithms share: the base class (group, scikit-learn requirement, common
parameters), reading the raster inputs, reading reference points or polygons into pixels, fitting on a sample
and mapping, saving models, styling. It defines no concrete algorithm (the base class is abstract)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from qgis.core import (
    QgsCoordinateTransform,
    QgsCsException,
    QgsFeatureRequest,
    QgsGeometry,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsRasterLayer,
    QgsWkbTypes,
)

from ..analysis.errors import TrainingDataError
from ..analysis.estimators import BuiltEstimator, make_estimator
from ..analysis.fitted import FittedModel
from ..analysis.pipeline import FitFunction, RasterSelection, ReferenceLayer, Sampling, fit_and_map, read_reference
from ..analysis.reference import NOT_REPROJECTABLE, ReferenceFeature, ReferencePixels
from ..analysis.trust import save_model
from ..tiling.errors import DeepRasterError
from ..tiling.outputs import ClassInfo
from .band_parameters import band_numbers
from .base import DeepRasterAlgorithm, callbacks_for
from .execution import backend_value, execution_parameters, pixel_mapper
from .styling import ClassStyle, ProbabilityStyle, style_on_load

MODEL_FILTER = "Deep Raster scikit-learn model (*.joblib)"


@dataclass(frozen=True)
class RasterInput:
    """The raster parameters resolved: the layer (its CRS for reprojecting references) and what is read of it."""

    layer: QgsRasterLayer
    selection: RasterSelection


def _is_null(value) -> bool:
    if value is None:
        return True
    if hasattr(value, "isNull"):
        try:
            return bool(value.isNull())
        except TypeError:
            return False
    return isinstance(value, str) and not value.strip()


class AnalysisAlgorithm(DeepRasterAlgorithm):
    """Base of the feature-space analysis algorithms (needs scikit-learn, not PyTorch)."""

    abstract = True
    required_packages = {"sklearn": "scikit-learn"}
    file_extensions = {"OUTPUT_MODEL": (".joblib",)}  # its description is written beside it as <name>.joblib.json

    BANDS = "BANDS"
    METHOD = "METHOD"
    METHOD_NAME = "METHOD_NAME"
    KWARGS = "KWARGS"
    SAMPLE_SIZE = "SAMPLE_SIZE"
    SEED = "SEED"
    STANDARDIZE = "STANDARDIZE"
    OUTPUT = "OUTPUT"
    OUTPUT_MODEL = "OUTPUT_MODEL"

    def group(self) -> str:
        return self.tr("Feature-space analysis")

    def groupId(self) -> str:  # noqa: N802 (QGIS API)
        return "feature_space_analysis"

    # ------------------------------------------------------------------------------------------------ parameters
    def add_raster_parameters(self, with_extent: bool = True) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.INPUT, self.tr("Input raster (features or image bands)")))
        self.addParameter(QgsProcessingParameterBand(
            self.BANDS, self.tr("Bands (empty: all)"), parentLayerParameterName=self.INPUT, optional=True,
            allowMultiple=True))
        if with_extent:
            self.addParameter(QgsProcessingParameterExtent(
                self.EXTENT, self.tr("Extent (empty: whole raster)"), optional=True))

    def add_method_parameters(self, options: tuple[str, ...], what: str) -> None:
        # option numbers (what `qgis_process help` lists) and option texts are both accepted: see parameterAsEnum
        self.addParameter(QgsProcessingParameterEnum(self.METHOD, self.tr(what), options=list(options),
                                                     defaultValue=0))
        self.add_advanced([
            QgsProcessingParameterString(self.METHOD_NAME, self.tr("Other scikit-learn estimator (by name)"),
                                         optional=True),
            QgsProcessingParameterString(self.KWARGS, self.tr("Estimator arguments (JSON)"), optional=True,
                                         multiLine=False),
        ])

    def add_sampling_parameters(self, default_size: int) -> None:
        self.addParameter(QgsProcessingParameterNumber(
            self.SAMPLE_SIZE, self.tr("Pixels sampled at random to fit on"), QgsProcessingParameterNumber.Integer,
            default_size, minValue=10))
        self.add_seed_parameter()
        self.add_standardize_parameter()

    def add_seed_parameter(self) -> None:
        self.add_advanced([QgsProcessingParameterNumber(self.SEED, self.tr("Random seed"),
                                                        QgsProcessingParameterNumber.Integer, 42, minValue=0)])

    def add_standardize_parameter(self) -> None:
        self.add_advanced([QgsProcessingParameterBoolean(
            self.STANDARDIZE, self.tr("Standardise bands before fitting"), True)])

    def add_model_output(self) -> None:
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_MODEL, self.tr("Fitted model (.joblib)"), MODEL_FILTER, optional=True,
            createByDefault=False))

    # ------------------------------------------------------------------------------------------------ inputs
    def add_execution_parameters(self) -> None:
        """Where every pixel is mapped once the model is fitted: this process or a Dask cluster (advanced)."""
        self.add_advanced(execution_parameters(self.tr))

    def raster_input(self, parameters, context) -> RasterInput:
        layer, source, region = self.input_source(parameters, context)
        mapper = pixel_mapper(backend_value(self, parameters, context))
        return RasterInput(layer, RasterSelection.of(source, band_numbers(self, parameters, self.BANDS, context),
                                                     region, mapper))

    def method_name(self, parameters, context) -> str:
        other = self.parameterAsString(parameters, self.METHOD_NAME, context).strip()
        return other or self.parameterDefinition(self.METHOD).options()[self.parameterAsEnum(parameters, self.METHOD,
                                                                                             context)]

    def estimator(self, parameters, context, kind: str, size: tuple[int, tuple[str, ...]] | None = None
                  ) -> BuiltEstimator:
        """The chosen estimator, built and checked (name, JSON arguments) before any pixel is read."""
        return make_estimator(kind, self.method_name(parameters, context),
                              self.parameterAsString(parameters, self.KWARGS, context),
                              seed=self.parameterAsInt(parameters, self.SEED, context), size=size)

    # ------------------------------------------------------------------------------------------------ running
    def fit_on_sample_and_map(self, parameters, context, feedback, built: BuiltEstimator,
                              fit: FitFunction) -> tuple[FittedModel, str]:
        """Sample valid pixels, fit ``fit(sample, built, band_names, standardize)``, map every pixel to OUTPUT."""
        raster = self.raster_input(parameters, context)
        sampling = Sampling(self.parameterAsInt(parameters, self.SAMPLE_SIZE, context),
                            self.parameterAsInt(parameters, self.SEED, context),
                            self.parameterAsBool(parameters, self.STANDARDIZE, context))
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        fitted = fit_and_map(raster.selection, built, fit, sampling, output, callbacks_for(feedback))
        return fitted, output

    def save_model_output(self, fitted: FittedModel, parameters, context, feedback) -> str | None:
        path = self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context)
        if not path:
            return None
        saved = save_model(fitted, path)
        feedback.pushInfo(f"Model saved to {saved} (description and signature in {saved.name}.json).")
        return str(saved)

    def reference_layer(self, source, raster: RasterInput, context, feedback, label_field: str | None,
                        group_field: str | None, per_polygon: int | None, role: str) -> ReferenceLayer:
        """A point or polygon layer as reference features in the raster's CRS (read lazily, during the run)."""
        if source is None:
            raise TrainingDataError(f"The {role} could not be loaded. Choose a point or polygon layer.")
        kind = QgsWkbTypes.geometryType(source.wkbType())
        if kind not in (QgsWkbTypes.PointGeometry, QgsWkbTypes.PolygonGeometry):
            raise TrainingDataError(f"The {role} holds lines; choose a point or polygon layer.")
        label_index = _field_index(source.fields(), label_field, role)
        group_index = _field_index(source.fields(), group_field, role)
        features = reference_features(source, raster.layer.crs(), context, label_index, group_index)
        return ReferenceLayer(features, kind == QgsWkbTypes.PointGeometry, label_index >= 0, per_polygon, role)

    def read_reference(self, source, raster: RasterInput, context, feedback, label_field: str | None,
                       group_field: str | None, per_polygon: int | None, seed: int, role: str) -> ReferencePixels:
        """Reference pixels of a point or polygon layer, reprojected to the raster's CRS, with their values;
        features outside the raster, without label, or on nodata pixels are reported and skipped."""
        layer = self.reference_layer(source, raster, context, feedback, label_field, group_field, per_polygon, role)
        return read_reference(raster.selection, layer, seed, callbacks_for(feedback))


def mask_polygons(algorithm, parameters, context, crs) -> tuple[bytes, ...] | None:
    """The polygons of the algorithm's mask layer parameter (``algorithm.MASK``) as WKB in ``crs`` (None: no mask
    layer given)."""
    source = algorithm.parameterAsSource(parameters, algorithm.MASK, context) if parameters.get(algorithm.MASK) \
        else None
    if source is None:
        return None
    if QgsWkbTypes.geometryType(source.wkbType()) != QgsWkbTypes.PolygonGeometry:
        raise DeepRasterError("The mask layer must hold polygons.")
    return tuple(f.wkb for f in reference_features(source, crs, context, -1, -1) if f.wkb)


def reference_features(source, crs, context, label_index: int, group_index: int) -> Iterator[ReferenceFeature]:
    """The features of ``source`` (a QgsFeatureSource) as :class:`ReferenceFeature` in ``crs``: curved
    geometries segmentised, labels that are NULL or blank as None, failed reprojections marked."""
    transform = None
    if source.sourceCrs().isValid() and crs.isValid() and source.sourceCrs() != crs:
        transform = QgsCoordinateTransform(source.sourceCrs(), crs, context.transformContext())
    request = QgsFeatureRequest()
    if label_index < 0 and group_index < 0:
        request.setNoAttributes()
    for feature in source.getFeatures(request):
        label = feature.attribute(label_index) if label_index >= 0 else None
        label = None if label_index >= 0 and _is_null(label) else label
        group = str(feature.attribute(group_index)) if group_index >= 0 else None
        geom = QgsGeometry(feature.geometry())
        if geom.isNull() or geom.isEmpty():
            yield ReferenceFeature(feature.id(), None, label, group)
            continue
        if transform is not None:
            try:
                geom.transform(transform)
            except QgsCsException:
                yield ReferenceFeature(feature.id(), None, label, group, unusable=NOT_REPROJECTABLE)
                continue
        if QgsWkbTypes.isCurvedType(geom.wkbType()):
            geom = QgsGeometry(geom.constGet().segmentize())
        yield ReferenceFeature(feature.id(), bytes(geom.asWkb()), label, group)


def _field_index(fields, name: str | None, role: str) -> int:
    if not name:
        return -1
    index = fields.lookupField(name)
    if index < 0:
        names = ", ".join(f.name() for f in fields) or "none"
        raise TrainingDataError(f"The field {name!r} is not in the {role}; its fields are: {names}. Choose one of "
                                "these.")
    return index


def style_classes(context, path: str | None, classes: tuple[ClassInfo, ...] | list[ClassInfo], name: str) -> None:
    """Paletted style with the class colours and names when QGIS loads ``path``."""
    if path:
        style_on_load(context, path, ClassStyle(list(classes)), name)


def style_ramp(context, path: str | None, name: str, maximum: float = 1.0) -> None:
    """A 0–maximum colour ramp on band 1 when QGIS loads ``path``."""
    if path:
        style_on_load(context, path, ProbabilityStyle(1, maximum), name)

