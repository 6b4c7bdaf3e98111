"""Processing algorithm "Run over a collection": one of Deep Raster's raster algorithms over a folder, a list or a
VRT mosaic of rasters, one output per input, a VRT mosaic of the outputs and a summary table."""

from __future__ import annotations

import os
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputRasterLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterString,
)

from ..scale.backend import check_backend
from ..tiling.collection import (
    DEFAULT_PATTERNS,
    CollectionItem,
    band_count_note,
    check_output_folder,
    gather_inputs,
    plan_items,
    preflight,
    run_items,
    split_patterns,
)
from ..tiling.collection_report import build_mosaic, counts, write_summary
from ..tiling.destinations import Destination
from ..tiling.errors import DependencyError
from .base import DeepRasterAlgorithm, callbacks_for
from .collection_params import MAIN_OUTPUTS, CollectionParameterError, band_need, extra_outputs, parse_parameters
from .execution import EXECUTION, backend_value

SUMMARY_CSV, SUMMARY_JSON, MOSAIC = "collection_summary.csv", "collection_summary.json", "collection_mosaic.vrt"


class RunCollectionAlgorithm(DeepRasterAlgorithm):
    search_tags = ("collection", "batch", "folder", "many rasters", "mosaic", "vrt", "tiles", "time series",
                   "deep learning")
    summary = "Runs a Deep Raster algorithm over a folder, list or VRT of rasters: one output each, a mosaic, a table."
    required_packages: dict[str, str] = {}  # the algorithm it runs says what it needs
    ALGORITHM = "ALGORITHM"
    PARAMETERS = "PARAMETERS"
    INPUT_FOLDER = "INPUT_FOLDER"
    PATTERN = "PATTERN"
    RECURSIVE = "RECURSIVE"
    INPUT_LAYERS = "INPUT_LAYERS"
    INPUT_VRT = "INPUT_VRT"
    MOSAIC = "MOSAIC"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    ALGORITHMS = tuple(MAIN_OUTPUTS)

    def name(self) -> str:
        return "run_collection"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Run over a collection")

    def group(self) -> str:
        return self.tr("Collections")

    def groupId(self) -> str:  # noqa: N802 (QGIS API)
        return "collections"

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Runs Classify pixels, Extract deep features or Apply a saved model over many rasters in one go: the "
            "files of a folder matching a pattern, a list of rasters, or the source files of a VRT mosaic (any "
            "combination; each file once).\n\n"
            "Parameters of the algorithm: a JSON object with the same keys as qgis_process takes, e.g. "
            '{"MODEL": "/path/to/model.json", "DEVICE": "cpu"}. INPUT and the main output are set per input. '
            "Other outputs (e.g. OUTPUT_PROBABILITIES) are written when given as true.\n\n"
            "Outputs go into the output folder, named after their input (scene.tif → scene.tif, "
            "scene_probabilities.tif). A VRT mosaic of the main outputs is made when they share a CRS and band "
            "layout (otherwise the log and the summary say why not), and a summary table (CSV and JSON: input, "
            "status, seconds, output, message).\n\n"
            "Every input is checked first (readable, enough bands for the model); an input that fails is reported "
            "in the log and the table, and the others still run. Cancel stops after the current input: the outputs "
            "finished so far, the mosaic of them and the table are kept. An output folder holding the inputs, or "
            "inside a searched input folder, is refused."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterEnum(self.ALGORITHM, self.tr("Algorithm"),
                                                     options=list(self.ALGORITHMS), defaultValue=0))
        self.addParameter(QgsProcessingParameterString(
            self.PARAMETERS, self.tr("Parameters of the algorithm (JSON)"), optional=True, multiLine=True))
        self.addParameter(QgsProcessingParameterFile(self.INPUT_FOLDER, self.tr("Input folder"), optional=True,
                                                     behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterString(self.PATTERN, self.tr("File patterns in the folder"),
                                                       DEFAULT_PATTERNS, optional=True))
        self.addParameter(QgsProcessingParameterMultipleLayers(
            self.INPUT_LAYERS, self.tr("Rasters"), QgsProcessing.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterFile(
            self.INPUT_VRT, self.tr("VRT mosaic (its source files)"), optional=True,
            behavior=QgsProcessingParameterFile.File, fileFilter=self.tr("VRT mosaic (*.vrt);;All files (*)")))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.tr("Output folder")))
        for param in (QgsProcessingParameterBoolean(self.RECURSIVE, self.tr("Search subfolders too"), False),
                      QgsProcessingParameterBoolean(self.MOSAIC, self.tr("VRT mosaic of the outputs"), True)):
            param.setFlags(param.flags() | param.FlagAdvanced)
            self.addParameter(param)
        self.addOutput(QgsProcessingOutputRasterLayer("OUTPUT_MOSAIC", self.tr("Mosaic of the outputs (VRT)")))
        self.addOutput(QgsProcessingOutputFile("OUTPUT_TABLE", self.tr("Summary table (CSV)")))
        self.addOutput(QgsProcessingOutputFile("OUTPUT_JSON", self.tr("Summary (JSON)")))
        self.addOutput(QgsProcessingOutputNumber("SUCCEEDED", self.tr("Inputs done")))
        self.addOutput(QgsProcessingOutputNumber("FAILED", self.tr("Inputs failed")))

    def start_message(self, parameters, context) -> str:
        algorithm = self.ALGORITHMS[self.parameterAsEnum(parameters, self.ALGORITHM, context)]
        return f"{self.displayName()}: {algorithm}…"

    def run_destinations(self, parameters, context) -> list[Destination]:
        """The output folder, checked as its parent folder when it does not exist yet (the run makes it)."""
        out = []
        for dest in super().run_destinations(parameters, context):
            if dest.kind == "folder" and not os.path.exists(dest.path):
                dest = Destination(os.path.dirname(os.path.abspath(dest.path)), dest.label, "folder")
            out.append(dest)
        return out

    def run_inputs(self, parameters, context) -> list[str]:
        """The input files (the input folder itself is checked by :func:`check_output_folder`)."""
        folder = self.parameterAsFile(parameters, self.INPUT_FOLDER, context)
        return [f for f in super().run_inputs(parameters, context) if not folder or f != folder]

    def run_algorithm(self, parameters, context, feedback) -> dict:
        algorithm = self.ALGORITHMS[self.parameterAsEnum(parameters, self.ALGORITHM, context)]
        child = QgsApplication.processingRegistry().algorithmById(f"deepraster:{algorithm}")
        ok, why = child.canExecute()
        if not ok:
            raise DependencyError(why)
        main = MAIN_OUTPUTS[algorithm]
        values = parse_parameters(self.parameterAsString(parameters, self.PARAMETERS, context), child, main)
        extras, values = extra_outputs(child, main, values)
        folder = self.parameterAsFile(parameters, self.INPUT_FOLDER, context) or None
        patterns = split_patterns(self.parameterAsString(parameters, self.PATTERN, context))
        recursive = self.parameterAsBool(parameters, self.RECURSIVE, context)
        layers = [layer.source() for layer in self.parameterAsLayerList(parameters, self.INPUT_LAYERS, context)]
        inputs = gather_inputs(folder, patterns, recursive, layers,
                               self.parameterAsFile(parameters, self.INPUT_VRT, context) or None)
        out_folder = Path(self.parameterAsFileOutput(parameters, self.OUTPUT_FOLDER, context))
        extension = f".{child.parameterDefinition(main).defaultFileExtension() or 'tif'}"
        reports = [SUMMARY_CSV, SUMMARY_JSON, MOSAIC]
        items = plan_items(inputs, out_folder, (main, extension), extras, reports)
        vrt = self.parameterAsFile(parameters, self.INPUT_VRT, context)
        check_output_folder(out_folder, items, folder, patterns, recursive, reports, [vrt] if vrt else [])
        need = band_need(algorithm, values, child)
        callbacks = callbacks_for(feedback)
        for item in items:
            preflight(item, need)
            if item.status == "failed":
                feedback.pushWarning(f"{Path(item.input).name} is left out: {item.message}")
        note = band_count_note(items)
        if note:
            feedback.pushInfo(note)
        self._check_child(child, values, items, context)
        if child.parameterDefinition(EXECUTION) is not None:  # a cluster problem stops the run once, not per input
            check_backend(backend_value(child, values, context))
        out_folder.mkdir(parents=False, exist_ok=True)
        feedback.pushInfo(f"{algorithm} over {len(items)} raster{'s' * (len(items) != 1)} into {out_folder}.")
        steps = QgsProcessingMultiStepFeedback(max(1, sum(i.status == "pending" for i in items)), feedback)
        run_items(items, lambda item, step: self._run_one(child, values, item, step, steps, context), callbacks)
        return self._finish(algorithm, values, items, out_folder, parameters, context, feedback)

    def _check_child(self, child, values: dict, items: list[CollectionItem], context) -> None:
        """The algorithm's own parameter checks, on the first readable input: a problem there is one of the shared
        parameters (a missing model), so the whole run stops before any input."""
        first = next((item for item in items if item.status == "pending"), None)
        if first is None:
            return
        ok, message = child.checkParameterValues(self._child_values(values, first), context)
        if not ok:
            raise CollectionParameterError(f"The parameters for {child.name()} do not work: {message}")

    @staticmethod
    def _child_values(values: dict, item: CollectionItem) -> dict:
        return {**values, "INPUT": item.input, **item.outputs}

    def _run_one(self, child, values: dict, item: CollectionItem, step: int, steps, context) -> None:
        """Run the algorithm on one input in its own context (its outputs are not loaded into the project)."""
        steps.setCurrentStep(step)
        instance = child.create()
        child_context = QgsProcessingContext()
        child_context.copyThreadSafeSettings(context)
        child_context.setProject(context.project())
        params = self._child_values(values, item)
        ok, message = instance.checkParameterValues(params, child_context)
        if not ok:
            raise CollectionParameterError(message)
        try:
            instance.run(params, child_context, steps, {}, False)
        except QgsProcessingException as exc:
            raise CollectionParameterError(str(exc.args[0]) if exc.args else str(exc)) from exc

    def _finish(self, algorithm: str, values: dict, items: list[CollectionItem], out_folder: Path, parameters,
                context, feedback) -> dict:
        """The mosaic of the outputs, the summary table, and the log lines that say how the run went."""
        done = [item.main for item in items if item.status == "ok"]
        mosaic, note = None, "The mosaic was not asked for."
        if self.parameterAsBool(parameters, self.MOSAIC, context):
            mosaic, note = build_mosaic(done, out_folder / MOSAIC)
        (feedback.pushInfo if mosaic or not done else feedback.pushWarning)(note)
        if mosaic is not None:  # loaded into the project when the run was started from the dialog
            context.addLayerToLoadOnCompletion(str(mosaic), QgsProcessingContext.LayerDetails(
                f"{algorithm} mosaic", context.project(), "OUTPUT_MOSAIC"))
        details = {"algorithm": f"deepraster:{algorithm}", "parameters": values, "output_folder": str(out_folder),
                   "mosaic": str(mosaic) if mosaic else None, "mosaic_note": note}
        csv_path, json_path = write_summary(items, out_folder / SUMMARY_CSV, out_folder / SUMMARY_JSON, details)
        tally = counts(items)
        feedback.pushInfo(f"{tally['ok']} of {tally['inputs']} inputs done, {tally['failed']} failed"
                          f"{', ' + str(tally['cancelled']) + ' cancelled' if tally['cancelled'] else ''}; "
                          f"summary in {csv_path.name}.")
        for item in items:
            if item.status == "failed":
                feedback.reportError(f"{Path(item.input).name}: {item.message}", False)
        return {self.OUTPUT_FOLDER: str(out_folder), "OUTPUT_MOSAIC": str(mosaic) if mosaic else None,
                "OUTPUT_TABLE": str(csv_path), "OUTPUT_JSON": str(json_path), "SUCCEEDED": tally["ok"],
                "FAILED": tally["failed"]}
