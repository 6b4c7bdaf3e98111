"""What every Deep Raster algorithm shares: naming, help, the feedback adapter, dependency checks and the
translation of core errors into ``QgsProcessingException``."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterable, Sequence

from osgeo import gdal
from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterVectorDestination,
    QgsProcessingUtils,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..tiling.callbacks import Callbacks
from ..tiling.destinations import Destination, reserve_destinations
from ..tiling.errors import DeepRasterError, RasterInputError
from ..tiling.gdal_pam import no_aux_files
from ..tiling.interrupt import terminate_as_cancel
from ..tiling.source import RasterSource
from ..tiling.transaction import run_transaction
from ..tiling.window import Window
from .band_parameters import band_numbers
from .styling import output_name

ICON = os.path.join(os.path.dirname(os.path.dirname(__file__)), "icons", "deepraster.svg")
DOCS_URL = "https://github.com/deepraster/deepraster/blob/main/docs/algorithms/{name}.md"
"""The help page of an algorithm (docs/algorithms/<name>.md in the repository); the dialog's Help button opens it."""

DEVICES = ("auto", "cpu", "cuda")
"""The options of the Device parameters: 'auto' is a CUDA GPU when PyTorch sees one, else the CPU."""

# import name → pip requirement, for the packages the deep-learning algorithms need
DEEP_LEARNING_PACKAGES = {"torch": "torch", "segmentation_models_pytorch": "segmentation-models-pytorch",
                          "safetensors": "safetensors"}


def missing_packages(packages: dict[str, str]) -> list[str]:
    """pip names of the packages in ``packages`` that cannot be imported here."""
    return [pip for module, pip in packages.items() if importlib.util.find_spec(module) is None]


def install_hint(pip_names: Sequence[str]) -> str:
    """A plain-text message (no HTML: the Processing dialog renders it as HTML) naming the missing packages, the
    installer that adds them, and the command that does the same by hand with QGIS's own Python."""
    import html
    import importlib.metadata

    from qgis.core import QgsApplication

    from ..installer.interpreter import likely_python
    from ..installer.pip_target import manual_command

    try:
        qgis_numpy = importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError:
        qgis_numpy = None
    command = manual_command(likely_python(), QgsApplication.qgisSettingsDirPath(), list(pip_names), qgis_numpy)
    text = (
        f"Missing Python package(s): {', '.join(pip_names)}. Install them with Plugins menu → Deep Raster → "
        "Install deep-learning packages… (or the Processing algorithm Deep Raster → Setup → Install deep-learning "
        "packages), then restart QGIS. To install by hand instead, run QGIS's own Python (on Windows in the "
        f"OSGeo4W Shell): {command}"
    )
    return html.escape(text, quote=False)  # a path holding < > & must not turn into markup


class DeepRasterAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses define the QGIS-facing names, parameters and ``run_algorithm``.

    The provider registers every subclass defined in a module of ``algorithms/``; set ``abstract = True`` in the
    class body of an intermediate base class to keep it out.
    """

    abstract = True
    INPUT = "INPUT"
    EXTENT = "EXTENT"

    required_packages: dict[str, str] = DEEP_LEARNING_PACKAGES
    folder_outputs: tuple[str, ...] = ()
    """File destinations that may also name a folder (a package written as a folder)."""
    file_extensions: dict[str, tuple[str, ...]] = {}
    """File destinations whose name must end in one of these extensions (a fitted model: its sidecar is named after
    it); other file destinations take any name."""
    search_tags: tuple[str, ...] = ()
    """Words the Processing Toolbox search finds the algorithm by (besides its name)."""
    summary: str = ""
    """One sentence: the toolbox tooltip and the Model Builder's description."""

    def tr(self, text: str) -> str:
        return QCoreApplication.translate(type(self).__name__, text)

    def createInstance(self):  # noqa: N802 (QGIS API)
        return type(self)()

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def tags(self) -> list[str]:
        return [self.tr(tag) for tag in self.search_tags]

    def shortDescription(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(self.summary)

    def helpUrl(self) -> str:  # noqa: N802 (QGIS API)
        return DOCS_URL.format(name=self.name())

    def parameterAsEnum(self, parameters, name, context) -> int:  # noqa: N802 (QGIS API)
        """The chosen option's index; the option's text (``METHOD=RandomForest``) is accepted as well as its
        number (``METHOD=0``, as ``qgis_process help`` lists them)."""
        index = enum_index(self.parameterDefinition(name), parameters.get(name))
        return index if index is not None else super().parameterAsEnum(parameters, name, context)

    def parameterAsRasterLayer(self, parameters, name, context):  # noqa: N802 (QGIS API)
        """QGIS's raster layer for ``name``; a file it has to load leaves no .aux.xml beside it."""
        with no_aux_files():
            return super().parameterAsRasterLayer(parameters, name, context)

    def add_advanced(self, params: Iterable[QgsProcessingParameterDefinition]) -> None:
        """Add parameters, in this order, under the dialog's "Advanced parameters"."""
        for param in params:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)

    def canExecute(self):  # noqa: N802 (QGIS API)
        missing = missing_packages(self.required_packages)
        return (False, install_hint(missing)) if missing else (True, "")

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS API)
        """QGIS's checks, with a clearer message when a raster input names a file that is not a raster; enum
        options may be given by their text."""
        named = {}
        for definition in self.parameterDefinitions():
            index = enum_index(definition, parameters.get(definition.name()))
            if index is not None:
                named[definition.name()] = index
        with no_aux_files():
            ok, message = super().checkParameterValues({**parameters, **named}, context)
        if ok:
            return ok, message
        for definition in self.parameterDefinitions():
            value = parameters.get(definition.name())
            if definition.type() == "raster" and isinstance(value, str) and os.path.isfile(value):
                try:
                    RasterSource.open(value)
                except DeepRasterError as exc:
                    return False, str(exc)
            if definition.type() in ("raster", "source", "vector") and isinstance(value, str) and value \
                    and not os.path.isfile(value.split("|")[0]) and os.path.isabs(value.split("|")[0]) \
                    and not value.startswith("/vsi"):  # GDAL's virtual file systems: QGIS says why it failed
                what = "is a folder" if os.path.isdir(value) else "does not exist"
                return False, (f"{definition.description()}: {value} {what}. Choose an existing "
                               f"{'raster' if definition.type() == 'raster' else 'vector'} file, or a layer of the "
                               "project.")
        return ok, message

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        feedback = feedback or QgsProcessingFeedback()
        feedback.pushInfo(self.start_message(parameters, context))
        missing = missing_packages(self.required_packages)
        if missing:
            raise QgsProcessingException(install_hint(missing))
        try:
            # destinations checked and locked, SIGTERM as cancel, every output renamed together at the end
            with reserve_destinations(self.run_destinations(parameters, context),
                                      self.run_inputs(parameters, context)), \
                    terminate_as_cancel(feedback.cancel), run_transaction():
                return self.run_algorithm(parameters, context, feedback)
        except DeepRasterError as exc:
            raise QgsProcessingException(str(exc)) from exc
        except OSError as exc:  # a file the checks could not foresee (removed, locked meanwhile): say which
            where = f" {exc.filename}" if exc.filename else ""
            raise QgsProcessingException(
                f"Cannot access{where}: {exc.strerror or exc}. Check that the file or folder exists and that you may "
                "write there, then run again."
            ) from exc
        except MemoryError as exc:
            raise QgsProcessingException(
                "Out of memory. Lower the batch size or the tile size in the advanced parameters."
            ) from exc

    def start_message(self, parameters, context) -> str:
        """The run's first log line, written before anything slow (imports, model loading) starts."""
        layer = None
        if self.parameterDefinition(self.INPUT) is not None and self.parameterDefinition(self.INPUT).type() == "raster":
            try:
                layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
            except Exception:  # noqa: BLE001 (an invalid input is reported by the run itself)
                layer = None
        what = f": reading {os.path.basename(layer.source().split('|')[0])}" if layer is not None else ""
        return f"{self.displayName()}{what}…"

    def run_destinations(self, parameters, context) -> list[Destination]:
        """Every destination of this run (raster, file and folder destination parameters) as the algorithm will
        resolve it; temporary outputs (fresh names in QGIS's temporary folder) are left out."""
        out = []
        temp_folder = os.path.realpath(QgsProcessingUtils.tempFolder())
        for definition in self.destinationParameterDefinitions():
            name, label = definition.name(), definition.description() or definition.name()
            extensions: tuple[str, ...] = ()
            try:
                if isinstance(definition, QgsProcessingParameterVectorDestination):  # written as a GeoPackage
                    path, kind, extensions = self.parameterAsOutputLayer(parameters, name, context), "file", (".gpkg",)
                elif isinstance(definition, QgsProcessingParameterRasterDestination):
                    path, kind = self.parameterAsOutputLayer(parameters, name, context), "geotiff"
                elif isinstance(definition, QgsProcessingParameterFolderDestination):
                    path, kind = self.parameterAsFileOutput(parameters, name, context), "folder"
                elif isinstance(definition, QgsProcessingParameterFileDestination):
                    path = self.parameterAsFileOutput(parameters, name, context)
                    kind = "folder" if name in self.folder_outputs and path and os.path.isdir(path) else "file"
                    extensions = self.file_extensions.get(name, ())
                else:
                    continue
            except Exception:  # noqa: BLE001 (an invalid value: the algorithm reports it in its own words)
                continue
            if path and not os.path.realpath(path).startswith(temp_folder + os.sep):
                out.append(Destination(path, label, kind, extensions))
        return out

    def run_inputs(self, parameters, context) -> list[str]:
        """The files this run reads: raster layers' sources, file parameters and vector layers given as files."""
        files = []
        for definition in self.parameterDefinitions():
            if definition.isDestination() or parameters.get(definition.name()) in (None, ""):
                continue
            kind, name = definition.type(), definition.name()
            try:
                if kind == "raster":
                    layer = self.parameterAsRasterLayer(parameters, name, context)
                    value = layer.source() if layer is not None else None
                elif kind == "file":
                    value = self.parameterAsFile(parameters, name, context)
                elif kind in ("vector", "source", "multilayer"):
                    value = parameters.get(name)
                else:
                    continue
            except Exception:  # noqa: BLE001
                continue
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str) and item:
                    files.append(re.split(r"\|", item, maxsplit=1)[0])
        return files

    def layer_name(self, parameters, context, what: str) -> str:
        """The name of an output layer: ``"<input layer> — <what>"``, so runs on different inputs differ."""
        try:
            layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        except Exception:  # noqa: BLE001 (no raster input: the plain name)
            layer = None
        return output_name(layer, what)

    def input_source(self, parameters, context) -> tuple[object, RasterSource, Window | None]:
        """The input layer, its raster and the pixel window of the processing extent (None: the whole raster)."""
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise RasterInputError("The input raster could not be loaded. Choose a raster layer or file GDAL can read.")
        source = RasterSource.open(layer.source())
        region = None
        if parameters.get(self.EXTENT):
            extent = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            region = source.window_for_bounds(extent.xMinimum(), extent.yMinimum(), extent.xMaximum(),
                                              extent.yMaximum())
        return layer, source, region

    def run_algorithm(self, parameters, context, feedback) -> dict:
        """The algorithm itself; raise :class:`DeepRasterError` for anything the user can fix."""
        raise NotImplementedError


class TrainingGroupAlgorithm(DeepRasterAlgorithm):
    """The algorithms of the toolbox group "Training": training data export, model training and evaluation."""

    abstract = True

    def group(self) -> str:
        return self.tr("Training")

    def groupId(self) -> str:  # noqa: N802 (QGIS API)
        return "training"


class TiledModelAlgorithm(DeepRasterAlgorithm):
    """What the algorithms that run a network over tiles share: the input raster and its processing extent, and
    the advanced tiling and compute parameters (tile size, overlap, batch size, device, half precision), the bands in
    the model's order and the input value scale."""

    abstract = True
    BANDS = "BANDS"
    VALUE_SCALE = "VALUE_SCALE"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    DEVICE = "DEVICE"
    HALF = "HALF"
    DEVICES = DEVICES

    def tiling_parameters(self, tile_default: str, overlap_default: str) -> list[QgsProcessingParameterDefinition]:
        """The tiling and compute parameters; 0 tile size and −1 overlap mean the defaults named in the labels (the
        values used are logged at the start of each run)."""
        return [
            QgsProcessingParameterNumber(self.TILE_SIZE, self.tr(f"Tile size, px (0: {tile_default}, see the log)"),
                                         QgsProcessingParameterNumber.Integer, 0, minValue=0, maxValue=8192),
            QgsProcessingParameterNumber(self.OVERLAP, self.tr(f"Tile overlap, px (-1: {overlap_default})"),
                                         QgsProcessingParameterNumber.Integer, -1, minValue=-1, maxValue=4096),
            QgsProcessingParameterNumber(self.BATCH_SIZE, self.tr("Batch size (tiles per model call)"),
                                         QgsProcessingParameterNumber.Integer, 4, minValue=1, maxValue=1024),
            QgsProcessingParameterEnum(self.DEVICE, self.tr("Device"), options=list(self.DEVICES), defaultValue=0),
            QgsProcessingParameterBoolean(self.HALF, self.tr("Half precision on GPU (float16)"), False),
        ]

    def model_bands_parameter(self) -> QgsProcessingParameterBand:
        """The input raster's bands in the model's order (empty: matched with the model's band names)."""
        return QgsProcessingParameterBand(self.BANDS, self.tr("Bands, model order (empty: by name)"),
                                          parentLayerParameterName=self.INPUT, optional=True, allowMultiple=True)

    def value_scale_parameter(self) -> QgsProcessingParameterNumber:
        """The input value scale (raster values × scale = model units; 0: the package's)."""
        return QgsProcessingParameterNumber(self.VALUE_SCALE, self.tr("Input value scale (0: the package's)"),
                                            QgsProcessingParameterNumber.Double, 0.0, minValue=0.0)

    def model_input_values(self, parameters, context) -> dict:
        """bands (None: matched by name) and value_scale (None: the package's), as request fields."""
        return {
            "bands": tuple(band_numbers(self, parameters, self.BANDS, context)) or None,
            "value_scale": self.parameterAsDouble(parameters, self.VALUE_SCALE, context) or None,
        }

    def tiling_values(self, parameters, context) -> dict:
        """tile_size, overlap (None: the default), batch_size, device and half, as request fields."""
        overlap = self.parameterAsInt(parameters, self.OVERLAP, context)
        return {
            "tile_size": self.parameterAsInt(parameters, self.TILE_SIZE, context) or None,
            "overlap": None if overlap < 0 else overlap,
            "batch_size": self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            "device": self.DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            "half": self.parameterAsBool(parameters, self.HALF, context),
        }


def callbacks_for(feedback: QgsProcessingFeedback) -> Callbacks:
    """Core callbacks that report to a Processing feedback object (progress in percent, cancel, messages;
    warnings as warnings, not errors: the run goes on)."""
    return Callbacks(progress=lambda fraction: feedback.setProgress(100.0 * fraction),
                     is_cancelled=feedback.isCanceled, info=feedback.pushInfo, warning=feedback.pushWarning,
                     stage=feedback.setProgressText)


def enum_index(definition: QgsProcessingParameterDefinition | None, value) -> int | None:
    """The index of an enum option given by its text (case-insensitive), or None (not an enum, or not a text
    naming one of its options: a number, a list, empty)."""
    if not isinstance(definition, QgsProcessingParameterEnum) or not isinstance(value, str):
        return None
    options = [option.casefold() for option in definition.options()]
    text = value.strip().casefold()
    return options.index(text) if text in options else None


def no_aux_files_in_qgis_process() -> bool:
    """In ``qgis_process run deepraster:...`` QGIS loads the input layers (computing their statistics) before any
    code of the plugin runs: there, GDAL_PAM_ENABLED=NO is set for the whole process, which runs nothing else.

    Not when a file named in the arguments already has a .aux.xml: GDAL would then not read it, and metadata that
    only it holds (nodata, band names, georeferencing of a plain image) would be lost; that file exists already."""
    args = QCoreApplication.arguments()
    if not (len(args) > 2 and os.path.basename(args[0]).startswith("qgis_process") and args[1] == "run"
            and args[2].startswith("deepraster:")):
        return False
    values = (arg.split("=", 1)[1].split("|", 1)[0].strip() for arg in args[3:] if "=" in arg)
    if any(os.path.isfile(f"{value}.aux.xml") for value in values if value):
        return False
    gdal.SetConfigOption("GDAL_PAM_ENABLED", "NO")
    return True


no_aux_files_in_qgis_process()
