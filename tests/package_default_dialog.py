"""Runs inside the QGIS desktop (``tests/test_desktop_dialogs.py``, through ``scripts/screenshots.py``): the Classify
pixels dialog's package-default spin boxes follow the Model package as it is typed, character by character, and as
it changes; invalid paths raise nothing; the parameter values stay 0 / −1; the Batch and Model Builder dialogs keep
QGIS's own widgets. ``run`` returns what it saw; the test judges it."""

from __future__ import annotations

import sys
import time

FIELDS = ("TILE_SIZE", "OVERLAP", "VALUE_SCALE")


def run(settle, args: dict) -> dict:
    """``args``: ``packages`` (paths typed in turn), ``invalid`` (paths set in turn), ``raster`` (an input)."""
    import processing
    from qgis.core import QgsProcessingContext

    errors: list[str] = []
    hook, sys.excepthook = sys.excepthook, lambda kind, value, tb: errors.append(f"{kind.__name__}: {value}")
    dialog = processing.createAlgorithmDialog("deepraster:classify_pixels")
    try:
        dialog.show()
        settle(200)
        wrappers = dialog.mainWidget().wrappers
        line = wrappers["MODEL"].wrappedWidget().lineEdit()

        def shown() -> dict:
            return {name: [wrappers[name].wrappedWidget().text(), wrappers[name].parameterValue()] for name in FIELDS}

        result = {"wrapper": type(wrappers["TILE_SIZE"]).__name__, "empty": shown(), "packages": [], "invalid": []}
        keys, start = 0, time.perf_counter()
        for path in args["packages"]:
            for end in range(1, len(path) + 1):  # as a user types it
                line.setText(path[:end])
                keys += 1
            result["packages"].append(shown())
        result["ms_per_key"] = 1000 * (time.perf_counter() - start) / keys
        for path in args["invalid"]:
            line.setText(path)
            result["invalid"].append(shown())
        context = QgsProcessingContext()
        line.setText(args["packages"][0])
        wrappers["TILE_SIZE"].setParameterValue(512, context)
        result["chosen"] = shown()
        wrappers["TILE_SIZE"].setParameterValue(0, context)
        for name in FIELDS:
            wrappers[name].wrappedWidget().interpretText()  # as when the spin box loses focus
        result["reset"] = shown()
        wrappers["INPUT"].setParameterValue(args["raster"], context)
        parameters = dialog.mainWidget().createProcessingParameters()
        result["parameters"] = {name: parameters[name] for name in FIELDS}
        result.update(other_dialogs(dialog.algorithm()))
    finally:
        dialog.close()
        dialog.deleteLater()
        settle(100)
        sys.excepthook = hook
    result["errors"] = errors
    return result


def other_dialogs(algorithm) -> dict:
    """The wrappers the Batch and Model Builder dialogs build for the package-default parameters, and the values
    the Model Builder stores for them."""
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    from processing.modeler.ModelerParametersDialog import ModelerParametersDialog
    from qgis.core import QgsProcessingModelAlgorithm

    batch = BatchAlgorithmDialog(algorithm.create())
    modeler = ModelerParametersDialog(algorithm.create(), QgsProcessingModelAlgorithm())
    try:
        wrappers = modeler.widget.widget.wrappers
        child = modeler.createAlgorithm()
        return {"batch": sorted({type(w).__name__ for w in batch.mainWidget().wrappers[0]}),
                "modeler": {name: type(wrappers[name]).__name__ for name in FIELDS},
                "modeler_values": {name: [s.staticValue() for s in child.parameterSources()[name]]
                                   for name in FIELDS}}
    finally:
        for dialog in (batch, modeler):
            dialog.close()
            dialog.deleteLater()
