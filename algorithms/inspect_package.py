"""Processing algorithm "Inspect model package": validate a package, .emd or .dlpk and write an HTML/JSON report."""

from __future__ import annotations

import json

from qgis.core import (
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
)

from ..models.inspect import inspect_model, report_html, status_text
from ..models.sources import MODEL_FILE_FILTER
from ..tiling.transaction import write_together
from .base import DeepRasterAlgorithm


class InspectPackageAlgorithm(DeepRasterAlgorithm):
    search_tags = ("model package", "validate", "inspect", "esri", "dlpk", "emd", "deep learning", "pytorch")
    summary = "Validates a model package or Esri model and writes an HTML and JSON report, with a dry run."
    MODEL = "MODEL"
    TRUST = "TRUST"
    DRY_RUN = "DRY_RUN"
    OUTPUT_HTML = "OUTPUT_HTML"
    OUTPUT_JSON = "OUTPUT_JSON"
    STATUS = "STATUS"

    def name(self) -> str:
        return "inspect_package"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr("Inspect model package")

    def group(self) -> str:
        return self.tr("Model packages")

    def groupId(self) -> str:  # noqa: N802 (QGIS API)
        return "model_packages"

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return self.tr(
            "Validates a model package (folder, model.json or .drpk) or an Esri model (.emd or .dlpk) and writes a "
            "report (HTML and JSON): every problem found, with its place in the description; metadata, licence and "
            "attribution; the expected input (bands, value scale, normalisation, tile size); the classes with their "
            "colours; the weights checksum; and a dry run on a small random tensor that proves the model loads and "
            "gives the declared output shape, with its parameter count. The status output (valid, invalid, failed) "
            "can drive a Model Builder model."
        )

    def initAlgorithm(self, config=None):  # noqa: N802 (QGIS API)
        self.addParameter(QgsProcessingParameterFile(self.MODEL, self.tr("Model package, .drpk, .emd or .dlpk"),
                                                     fileFilter=MODEL_FILE_FILTER))
        self.addParameter(QgsProcessingParameterBoolean(
            self.TRUST, self.tr("I trust this model file (pickles can run code)"),
            False))
        self.addParameter(QgsProcessingParameterBoolean(self.DRY_RUN, self.tr("Dry run the model"), True))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_HTML, self.tr("Report (HTML)"),
                                                                fileFilter="HTML (*.html)"))
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_JSON, self.tr("Report (JSON)"),
                                                                fileFilter="JSON (*.json)", optional=True,
                                                                createByDefault=True))
        self.addOutput(QgsProcessingOutputString(self.STATUS, self.tr("Status (valid, invalid or failed)")))

    def run_algorithm(self, parameters, context, feedback) -> dict:
        report = inspect_model(self.parameterAsFile(parameters, self.MODEL, context),
                               trusted=self.parameterAsBool(parameters, self.TRUST, context),
                               dry_run=self.parameterAsBool(parameters, self.DRY_RUN, context))
        feedback.pushInfo(f"Status: {status_text(report)}")
        for problem in report.get("warnings", []) + report["problems"]:
            feedback.pushWarning(problem)
        html_path = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context)
        json_path = self.parameterAsFileOutput(parameters, self.OUTPUT_JSON, context)
        contents = {html_path: report_html(report)}
        if json_path:
            plain = json.loads(json.dumps(report, default=str))
            contents[json_path] = json.dumps(plain, indent=2, ensure_ascii=False) + "\n"
        write_together(contents)  # both reports or neither
        return {self.OUTPUT_HTML: html_path, self.OUTPUT_JSON: json_path or None, self.STATUS: report["status"]}
