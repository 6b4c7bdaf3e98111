"""What the feature-space analysis algorithms share: the base class (group, scikit-learn requirement, common
parameters), reading the raster inputs, reading reference points or polygons into pixels, fitting on a sample
and mapping, saving models, styling. It defines no concrete algorithm (the base class is abstract)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from qgis.core import (
    QgsCoordinateTransform,
    QgsCsException,
    QgsFeatureRequest,
    QgsGeometry,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsRasterLayer,
    QgsWkbTypes,
)

from ..models.estimators import BuiltEstimator, make_estimator
from ..models.fitted import FittedModel
from ..models.ml_errors import TrainingDataError
from ..models.trust import save_model
from ..tiling.errors import RasterInputError
from ..tiling.grid import Window
from ..tiling.outputs import ClassInfo
from ..tiling.pixelwise import PixelOutput, map_pixels, sample_valid_pixels, sub_callbacks, values_at_points
from ..tiling.reader import RasterSource
from ..tiling.vector_pixels import map_to_pixel, pixel_centres, polygon_pixels
from .base import DeepRasterAlgorithm, callbacks_for
from .styling import ClassStyle, ProbabilityStyle, style_on_load

MODEL_FILTER = "Deep Raster scikit-learn model (*.joblib)"


@dataclass(frozen=True)
class RasterInput:
    """The raster parameters resolved: layer, source, bands (1-based) and their names, region (None: all)."""

    layer: QgsRasterLayer
    source: RasterSource
    bands: tuple[int, ...]
    band_names: tuple[str, ...]
    region: Window | None


@dataclass
class ReferencePixels:
    """Reference features turned into raster pixels: positions, labels, groups, values and what was skipped."""

    cols: np.ndarray
    rows: np.ndarray
    labels: np.ndarray  # object array (None when no label field)
    groups: np.ndarray  # int64: feature id, or code of the group field's value
    xy: np.ndarray  # (n, 2) pixel centres in the raster CRS
    values: np.ndarray | None = None  # (n, bands) float32, after read_values
    features_used: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def subset(self, keep: np.ndarray) -> ReferencePixels:
        return ReferencePixels(self.cols[keep], self.rows[keep], self.labels[keep], self.groups[keep], self.xy[keep],
                               None if self.values is None else self.values[keep], self.features_used, self.skipped)


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

    INPUT = "INPUT"
    BANDS = "BANDS"
    EXTENT = "EXTENT"
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
    def add_advanced(self, param: QgsProcessingParameterDefinition) -> None:
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(param)

    def add_raster_parameters(self, with_extent: bool = True) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.INPUT, self.tr("Input raster (feature raster or multispectral image)")))
        self.addParameter(QgsProcessingParameterBand(
            self.BANDS, self.tr("Bands (empty: all)"), parentLayerParameterName=self.INPUT, optional=True,
            allowMultiple=True))
        if with_extent:
            self.addParameter(QgsProcessingParameterExtent(
                self.EXTENT, self.tr("Processing extent (empty: whole raster)"), optional=True))

    def add_method_parameters(self, options: tuple[str, ...], what: str) -> None:
        method = QgsProcessingParameterEnum(self.METHOD, self.tr(what), options=list(options),
                                            defaultValue=options[0])
        method.setUsesStaticStrings(True)
        self.addParameter(method)
        self.add_advanced(QgsProcessingParameterString(
            self.METHOD_NAME, self.tr("Other scikit-learn estimator by name (overrides the method above)"),
            optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.KWARGS, self.tr('Estimator keyword arguments as JSON, e.g. {"n_estimators": 200}'), optional=True,
            multiLine=False))

    def add_sampling_parameters(self, default_size: int) -> None:
        self.addParameter(QgsProcessingParameterNumber(
            self.SAMPLE_SIZE, self.tr("Pixels sampled at random to fit on"), QgsProcessingParameterNumber.Integer,
            default_size, minValue=10))
        self.add_seed_parameter()
        self.add_standardize_parameter()

    def add_seed_parameter(self) -> None:
        self.add_advanced(QgsProcessingParameterNumber(self.SEED, self.tr("Random seed"),
                                                       QgsProcessingParameterNumber.Integer, 42, minValue=0))

    def add_standardize_parameter(self) -> None:
        self.add_advanced(QgsProcessingParameterBoolean(
            self.STANDARDIZE, self.tr("Standardise bands (zero mean, unit variance) before fitting"), True))

    def add_model_output(self) -> None:
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_MODEL, self.tr("Fitted model (.joblib, to apply later)"), MODEL_FILTER, optional=True,
            createByDefault=False))

    # ------------------------------------------------------------------------------------------------ inputs
    def raster_input(self, parameters, context) -> RasterInput:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise RasterInputError("The input raster could not be loaded. Choose a raster layer or file GDAL can read.")
        source = RasterSource.open(layer.source())
        bands = tuple(self.parameterAsInts(parameters, self.BANDS, context)) or tuple(range(1, source.band_count + 1))
        source.check_bands(bands)
        names = tuple(source.descriptions[b - 1] or f"band {b}" for b in bands)
        region = None
        if parameters.get(self.EXTENT):
            extent = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            region = source.window_for_bounds(extent.xMinimum(), extent.yMinimum(), extent.xMaximum(),
                                              extent.yMaximum())
        return RasterInput(layer, source, bands, names, region)

    def method_name(self, parameters, context) -> str:
        other = self.parameterAsString(parameters, self.METHOD_NAME, context).strip()
        return other or self.parameterAsString(parameters, self.METHOD, context)

    def estimator(self, parameters, context, kind: str, size: tuple[int, tuple[str, ...]] | None = None
                  ) -> BuiltEstimator:
        """The chosen estimator, built and checked (name, JSON arguments) before any pixel is read."""
        return make_estimator(kind, self.method_name(parameters, context),
                              self.parameterAsString(parameters, self.KWARGS, context),
                              seed=self.parameterAsInt(parameters, self.SEED, context), size=size)

    # ------------------------------------------------------------------------------------------------ running
    def fit_on_sample_and_map(self, parameters, context, feedback, built: BuiltEstimator,
                              fit: Callable[..., FittedModel]) -> tuple[FittedModel, RasterInput, str]:
        """Sample valid pixels, fit ``fit(sample, built, band_names, standardize)``, map every pixel to OUTPUT."""
        raster = self.raster_input(parameters, context)
        cb = callbacks_for(feedback)
        size = self.parameterAsInt(parameters, self.SAMPLE_SIZE, context)
        seed = self.parameterAsInt(parameters, self.SEED, context)
        feedback.setProgressText(self.tr("Sampling {} valid pixels").format(size))
        sample = sample_valid_pixels(raster.source, raster.bands, size, seed, raster.region,
                                     sub_callbacks(cb, 0.0, 0.3))
        feedback.pushInfo(f"Sampled {len(sample.values)} of {sample.valid_count} valid pixels ({len(raster.bands)} "
                          f"bands).")
        feedback.setProgressText(self.tr("Fitting {}").format(built.name))
        standardize = self.parameterAsBool(parameters, self.STANDARDIZE, context)
        fitted = fit(sample.values, built, raster.band_names, standardize,
                     params={"sample_size": size, "seed": seed, "bands": list(raster.bands)})
        for key, value in fitted.notes.items():
            feedback.pushInfo(f"{key.replace('_', ' ')}: {value}")
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        feedback.setProgressText(self.tr("Mapping every pixel"))
        stats = map_pixels(raster.source, raster.bands, fitted.pixel_function(), [fitted.main_output(output)],
                           raster.region, sub_callbacks(cb, 0.35, 1.0))
        feedback.pushInfo(f"{stats.valid_pixels} valid pixels mapped in {stats.windows} windows, "
                          f"{stats.seconds:.1f} s.")
        return fitted, raster, output

    def save_model_output(self, fitted: FittedModel, parameters, context, feedback) -> str | None:
        path = self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context)
        if not path:
            return None
        saved = save_model(fitted, path)
        feedback.pushInfo(f"Model saved to {saved} (description and signature in {saved.name}.json).")
        return str(saved)

    def read_reference(self, source, raster: RasterInput, context, feedback, label_field: str | None,
                       group_field: str | None, per_polygon: int | None, seed: int, role: str) -> ReferencePixels:
        """Reference pixels of a point or polygon layer, reprojected to the raster's CRS, with their values;
        features outside the raster, without label, or on nodata pixels are reported and skipped."""
        ref = reference_pixels(source, raster, context, label_field, group_field, per_polygon, seed, role,
                               feedback)
        values, valid = values_at_points(raster.source, raster.bands, ref.cols, ref.rows)
        ref.values = values
        if not valid.all():
            ref.skipped["pixel(s) on nodata"] = int((~valid).sum())
            ref = ref.subset(valid)
        skipped = "; ".join(f"{n} {why}" for why, n in ref.skipped.items() if n)
        feedback.pushInfo(f"{role.capitalize()}: {ref.features_used} feature(s) give {len(ref.cols)} usable pixel(s)"
                          + (f"; skipped: {skipped}." if skipped else "."))
        if len(ref.cols) == 0:
            raise TrainingDataError(f"Every pixel of the {role} lies on nodata in the raster ({skipped}). Choose "
                                    "reference data over valid pixels.")
        return ref


def reference_pixels(source, raster: RasterInput, context, label_field: str | None, group_field: str | None,
                     per_polygon: int | None, seed: int, role: str, feedback=None) -> ReferencePixels:
    """Pixels of the features of ``source`` (a QgsFeatureSource of points or polygons) inside the raster.

    Points give the pixel under them; polygons the pixel centres inside them, at most ``per_polygon`` per polygon
    (a seeded random subset: the same seed gives the same pixels). Groups are feature ids, or the values of
    ``group_field``.
    """
    if source is None:
        raise TrainingDataError(f"The {role} could not be loaded. Choose a point or polygon layer.")
    kind = QgsWkbTypes.geometryType(source.wkbType())
    if kind not in (QgsWkbTypes.PointGeometry, QgsWkbTypes.PolygonGeometry):
        raise TrainingDataError(f"The {role} holds lines; choose a point or polygon layer.")
    fields = source.fields()
    label_index = _field_index(fields, label_field, role)
    group_index = _field_index(fields, group_field, role)
    crs = raster.layer.crs()
    transform = None
    if source.sourceCrs().isValid() and crs.isValid() and source.sourceCrs() != crs:
        transform = QgsCoordinateTransform(source.sourceCrs(), crs, context.transformContext())
    src = raster.source
    gt, size = src.geotransform, (src.width, src.height)
    cols, rows, labels, groups = [], [], [], []
    group_codes: dict[str, int] = {}
    skipped = {"feature(s) outside the raster": 0, "feature(s) without label": 0, "feature(s) without geometry": 0,
               "feature(s) not reprojectable": 0}
    used = total = 0
    request = QgsFeatureRequest()
    if label_index < 0 and group_index < 0:
        request.setNoAttributes()
    for feature in source.getFeatures(request):
        if feedback is not None and feedback.isCanceled():
            break
        total += 1
        label = feature.attribute(label_index) if label_index >= 0 else None
        if label_index >= 0 and _is_null(label):
            skipped["feature(s) without label"] += 1
            continue
        geom = QgsGeometry(feature.geometry())
        if geom.isNull() or geom.isEmpty():
            skipped["feature(s) without geometry"] += 1
            continue
        if transform is not None:
            try:
                geom.transform(transform)
            except QgsCsException:
                skipped["feature(s) not reprojectable"] += 1
                continue
        if kind == QgsWkbTypes.PointGeometry:
            pts = [(p.x(), p.y()) for p in geom.constParts()]
            c, r = map_to_pixel(gt, np.array([p[0] for p in pts]), np.array([p[1] for p in pts]))
            inside = (c >= 0) & (c < size[0]) & (r >= 0) & (r < size[1])
            c, r = c[inside], r[inside]
        else:
            if QgsWkbTypes.isCurvedType(geom.wkbType()):
                geom = QgsGeometry(geom.constGet().segmentize())
            rng = np.random.default_rng([seed, feature.id() & 0xFFFFFFFF])
            c, r = polygon_pixels(bytes(geom.asWkb()), gt, size, per_polygon, rng)
        if c.size == 0:
            skipped["feature(s) outside the raster"] += 1
            continue
        used += 1
        if group_index >= 0:
            key = str(feature.attribute(group_index))
            group = group_codes.setdefault(key, len(group_codes))
        else:
            group = int(feature.id())
        cols.append(c)
        rows.append(r)
        labels += [label] * c.size
        groups.append(np.full(c.size, group, np.int64))
    if used == 0:
        raise TrainingDataError(
            f"None of the {total} feature(s) of the {role} gives a pixel inside the raster "
            f"({', '.join(f'{n} {why}' for why, n in skipped.items() if n) or 'the layer is empty'}). Check that the "
            "layer covers the raster (layers in another CRS are reprojected to the raster's CRS) and, if a label "
            "field is used, that it is filled."
        )
    c, r = np.concatenate(cols), np.concatenate(rows)
    label_array = np.empty(len(labels), dtype=object)
    label_array[:] = labels
    return ReferencePixels(c, r, label_array, np.concatenate(groups),
                           pixel_centres(gt, c, r), None, used, skipped)


def _field_index(fields, name: str | None, role: str) -> int:
    if not name:
        return -1
    index = fields.lookupField(name)
    if index < 0:
        names = ", ".join(f.name() for f in fields) or "none"
        raise TrainingDataError(f"The field {name!r} is not in the {role}; its fields are: {names}.")
    return index


def style_classes(context, path: str | None, classes: tuple[ClassInfo, ...] | list[ClassInfo], name: str) -> None:
    """Paletted style with the class colours and names when QGIS loads ``path``."""
    if path:
        style_on_load(context, path, ClassStyle(list(classes)), name)


def style_ramp(context, path: str | None, name: str, maximum: float = 1.0) -> None:
    """A 0–maximum colour ramp on band 1 when QGIS loads ``path``."""
    if path:
        style_on_load(context, path, ProbabilityStyle(1, maximum), name)


def pixel_output(path: str, names: tuple[str, ...]) -> PixelOutput:
    """A float32 output with NaN nodata and one band per name."""
    return PixelOutput(path, len(names), np.float32, float("nan"), names)
