"""The outputs of an object classifier run: the image-classification package of the best epoch (through
:func:`models.package.write_checked_package`, which loads the weights back strictly and runs the classifier once
before the archive is complete) and the report (HTML + JSON: accuracy, balanced accuracy, per-class precision and
recall and the confusion matrix on the validation chips, next to the majority-class baseline), handed to the run's
transaction, so a failed run publishes nothing. The checkpoint folder goes once the outputs are published, except
after a cancel: a run started again with the same parameters then continues from it."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ..analysis.evaluation_report import table
from ..models.classifiers import check_classifier
from ..models.package import write_checked_package
from .report import class_tables, learning_curves_png, split_map_png
from .report_page import RunReport, image_section, page, parameters_section, warning_paragraphs
from .run_outputs import data_band_names, publish_package, write_report


class ClassifierReport(RunReport):
    """What was trained on which tiles, how it learnt epoch by epoch, and how well the best epoch classifies the
    validation tiles (``validation``: :func:`training.classifier_train.classification_scores`)."""

    def html(self) -> str:
        return report_html(self)


def data_summary(run) -> dict[str, Any]:
    """What the run trained on (for the report and the package's provenance)."""
    return {"folder": str(Path(run.request.data).resolve()), "layout": run.folder.layout,
            "train_tiles": len(run.data.train), "validation_tiles": len(run.data.validation),
            "chip_size": run.data.chip_size, "bands": data_band_names(run),
            "split": "drawn at random by tile" if run.data.drawn_split else "spatial blocks",
            "tile_counts": run.data.counts, "chipping": run.folder.chipping}


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def description(run, parameters: dict[str, Any]) -> dict[str, Any]:
    """The ``model.json`` of the package (weights entry added when it is written)."""
    request, t, v = run.request, run.transform, run.best["scores"]
    base = v["majority_baseline"]
    summary = (f"{run.arch.arch} trained by Deep Raster on {len(run.data.train)} tiles of {Path(request.data).name}; "
               f"best epoch {run.best['epoch']} of {len(run.history)}: validation accuracy "
               f"{_number(v['overall_accuracy'])}, balanced accuracy {_number(v['balanced_accuracy'])} on "
               f"{len(run.data.validation)} tiles (always '{base['class']}': {_number(base['accuracy'])}, "
               f"{_number(base['balanced_accuracy'])}).")
    return {
        "name": request.name or Path(request.output).stem, "version": "1.0.0", "description": summary,
        "license": request.license, "attribution": run.attribution, "task": "image_classification",
        "architecture": {"framework": "timm", "arch": run.arch.arch, "in_channels": run.arch.in_channels,
                         "out_channels": run.arch.out_channels},
        "input": {"bands": [{"name": n, "default_band": i + 1} for i, n in enumerate(data_band_names(run))],
                  "value_scale": t.scale, "value_offset": t.offset,
                  "normalization": {"type": "mean_std", "mean": list(t.mean), "std": list(t.std)}},
        "inference": {"tile_size": run.data.chip_size, "activation": "softmax"},
        "training": {"tile_size": run.data.chip_size},
        "classes": [{"value": int(c["value"]), "name": str(c["name"]), "color": c["color"]}
                    for c in run.folder.classes],
        "provenance": {"trained_with": "Deep Raster: Train object classifier", "data": data_summary(run),
                       "parameters": parameters, "best_epoch": run.best["epoch"], "epochs_run": len(run.history),
                       "stopped": run.stopped, "history": run.history,
                       "validation": {k: v[k] for k in ("overall_accuracy", "balanced_accuracy", "kappa",
                                                        "majority_baseline")}
                       | {"per_class_recall": {c["class"]: c["recall"] for c in v["per_class"]}}},
    }


def write_classifier_outputs(run, parameters: dict[str, Any]):
    """Write the package (best epoch) and the report; returns the
    :class:`training.classifier_train.ClassifierTrainResult`."""
    from .classifier_train import ClassifierTrainResult

    output, digest = publish_package(
        run, lambda temp: write_checked_package(temp, description(run, parameters), run.best_state, check_classifier))
    windows = {split: [list(t.window) for t in tiles if t.window]
               for split, tiles in (("train", run.data.train), ("validation", run.data.validation))}
    report = ClassifierReport(str(output), data_summary(run), parameters, run.history, run.best["epoch"],
                              run.stopped, list(run.folder.classes), run.best["scores"], digest,
                              chip_windows=windows)
    write_report(run, report, "The folder had no split: validation tiles were drawn at random, so they may lie next "
                              "to training tiles and the scores may be optimistic.")
    return ClassifierTrainResult.of(run, output, run.best["scores"], digest)


def report_html(report: ClassifierReport) -> str:
    """A self-contained HTML page (no scripts, no external files); every value is escaped."""
    e = html.escape
    v, d = report.validation, report.data
    base = v["majority_baseline"]
    parts = ["<h1>Object classifier training</h1>",
             f"<p>Package: {e(report.package)}<br>Tiles: {e(str(d.get('folder', '')))} "
             f"({e(str(d.get('layout', '')))}; {d.get('train_tiles')} training, {d.get('validation_tiles')} "
             f"validation tiles of {d.get('chip_size')} px; split: {e(str(d.get('split', '')))})<br>"
             f"Best epoch: {report.best_epoch} of {len(report.history)} run ({e(report.stopped)})</p>"]
    parts += warning_paragraphs(report.warnings)
    parts.append(f"<h2>Validation tiles, best epoch ({report.best_epoch})</h2>")
    parts.append(table(["metric", "classifier", f"majority class ({e(str(base['class']))})"],
                       [["accuracy", _number(v["overall_accuracy"]), _number(base["accuracy"])],
                        ["balanced accuracy", _number(v["balanced_accuracy"]), _number(base["balanced_accuracy"])],
                        ["Cohen's kappa", _number(v["kappa"]), "0"], ["macro F1", _number(v["macro_f1"]), ""],
                        ["tiles", v["n"], v["n"]]]))
    parts += class_tables(report.classes, v, "tiles")
    parts += image_section("Learning curves", "learning curves",
                           learning_curves_png(report.history, "validation_balanced_accuracy",
                                               "validation balanced accuracy"))
    parts += image_section("Training and validation tiles", "map of the split", split_map_png(report.chip_windows))
    parts.append("<h2>Epochs</h2>")
    parts.append(table(["epoch", "training loss", "validation loss", "validation accuracy",
                        "validation balanced accuracy", "learning rate", "seconds"],
                       [[h["epoch"], h["train_loss"], h["validation_loss"], _number(h["validation_accuracy"]),
                         _number(h["validation_balanced_accuracy"]), f"{h['learning_rate']:.3g}",
                         f"{h['seconds']:.1f}"] for h in report.history]))
    parts += parameters_section(report.parameters)
    return page("Object classifier training", parts)
