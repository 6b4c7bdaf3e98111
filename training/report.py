"""The report of a training run: a JSON-ready dict and a self-contained HTML page with the learning curves (a PNG
drawn with matplotlib, embedded), the per-epoch metrics, and per-class IoU / precision / recall / F1 and the
confusion matrix of the best epoch on the validation chips (tables as in the class-map evaluation report)."""

from __future__ import annotations

import html
from typing import Any

from ..analysis.evaluation_report import cell, class_cell, class_label, table
from .report_page import (
    RunReport,
    figure_png,
    image_section,
    page,
    parameters_section,
    warning_paragraphs,
)


class TrainingReport(RunReport):
    """What was trained on which chips, how it learnt epoch by epoch, and how well the best epoch does
    (``validation``: :func:`analysis.metrics.class_scores` of the best epoch on the validation chips)."""

    def html(self) -> str:
        return report_html(self)


def learning_curves_png(history: list[dict[str, Any]], score: str = "validation_miou",
                        label: str = "validation mIoU") -> bytes | None:
    """Training / validation loss (when recorded) and the validation ``score`` (named ``label``) per epoch as a PNG
    (None without matplotlib)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    epochs = [h["epoch"] for h in history]
    figure = Figure(figsize=(8, 3.2), dpi=100)
    loss, axes = figure.subplots(1, 2)
    loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="training")
    if all(h.get("validation_loss") is not None for h in history):
        loss.plot(epochs, [h["validation_loss"] for h in history], "s-", label="validation")
    loss.set_xlabel("epoch")
    loss.set_ylabel("loss")
    loss.legend()
    axes.plot(epochs, [h[score] for h in history], "o-", color="tab:green")
    axes.set_xlabel("epoch")
    axes.set_ylabel(label)
    return figure_png(figure)


def split_map_png(windows: dict[str, list[list[int]]]) -> bytes | None:
    """The training (blue) and validation (orange) chips on the source raster's pixel grid, as a PNG (None without
    matplotlib or without windows)."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle
    except ImportError:
        return None
    if not any(windows.values()):
        return None
    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.subplots()
    for split, colour in (("train", "tab:blue"), ("validation", "tab:orange")):
        for i, (col, row, width, height) in enumerate(windows.get(split, [])):
            axes.add_patch(Rectangle((col, row), width, height, facecolor=colour, edgecolor="white", linewidth=0.3,
                                     label=split if i == 0 else None))
    every = [w for ws in windows.values() for w in ws]
    axes.set_xlim(min(w[0] for w in every), max(w[0] + w[2] for w in every))
    axes.set_ylim(max(w[1] + w[3] for w in every), min(w[1] for w in every))  # rows grow downwards
    axes.set_aspect("equal")
    axes.set_xlabel("column (px)")
    axes.set_ylabel("row (px)")
    axes.legend(loc="upper right", fontsize="small")
    return figure_png(figure)


def report_html(report: TrainingReport) -> str:
    """A self-contained HTML page (no scripts, no external files); every value is escaped."""
    e = html.escape
    v = report.validation
    parts = ["<h1>Segmentation model training</h1>",
             f"<p>Package: {e(report.package)}<br>Chips: {e(str(report.data.get('folder', '')))} "
             f"({e(str(report.data.get('layout', '')))}; {report.data.get('train_chips')} training, "
             f"{report.data.get('validation_chips')} validation chips of {report.data.get('chip_size')} px; split: "
             f"{e(str(report.data.get('split', '')))})<br>Best epoch: {report.best_epoch} of {len(report.history)} "
             f"run ({e(report.stopped)})</p>"]
    parts += warning_paragraphs(report.warnings)
    parts += image_section("Learning curves", "learning curves", learning_curves_png(report.history))
    parts += image_section("Training and validation chips", "map of the split", split_map_png(report.chip_windows))
    parts.append("<h2>Epochs</h2>")
    parts.append(table(["epoch", "training loss", "validation loss", "validation mIoU", "overall accuracy",
                         "learning rate", "seconds"],
                        [[h["epoch"], h["train_loss"], h["validation_loss"], h["validation_miou"],
                          h["validation_overall_accuracy"], f"{h['learning_rate']:.3g}", f"{h['seconds']:.1f}"]
                         for h in report.history]))
    parts.append(f"<h2>Validation chips, best epoch ({report.best_epoch})</h2>")
    parts.append(table(["metric", "value"], [["overall accuracy", v["overall_accuracy"]], ["mean IoU", v["miou"]],
                                              ["Cohen's kappa", v["kappa"]], ["macro F1", v["macro_f1"]],
                                              ["pixels", v["n"]]]))
    parts += class_tables(report.classes, v, "pixels", ["IoU"])
    parts += parameters_section(report.parameters)
    return page("Segmentation model training", parts)


def class_tables(class_table: list[dict[str, Any]], v: dict[str, Any], unit: str, extra: list[str] = ()) -> list[str]:
    """Per-class scores (the ``extra`` ones, e.g. "IoU", then precision, recall, F1 and the reference and predicted
    counts) and the confusion matrix of :func:`analysis.metrics.class_scores` ``v``, counted in ``unit``."""
    classes = [{"name": c["name"], "value": c["value"], "colour": c.get("color")} for c in class_table]
    parts = [table(["class", *extra, "precision", "recall", "F1", f"reference {unit}", f"predicted {unit}"],
                   [[class_cell(info), *(c[k.lower()] for k in extra), c["precision"], c["recall"], c["f1"],
                     c["support"], c["predicted"]] for info, c in zip(classes, v["per_class"], strict=True)])]
    cm = v["confusion_matrix"]
    parts.append(f"<h3>Confusion matrix ({unit}; rows: reference, columns: predicted)</h3>")
    header = ["reference \\ predicted", *(class_label(n, k) for n, k in zip(cm["labels"], cm["values"], strict=True)),
              "total"]
    rows = [[class_cell(info), *(cell(x, "diag" if i == j else "") for j, x in enumerate(row)), sum(row)]
            for i, (info, row) in enumerate(zip(classes, cm["matrix"], strict=True))]
    rows.append(["total", *(sum(col) for col in zip(*cm["matrix"], strict=True)), v["n"]])
    parts.append(table(header, rows))
    return parts
