"""The report of a detector training run: a JSON-ready dict and a self-contained HTML page with the learning curves,
the precision–recall curve at IoU 0.5 and the AP per class of the best epoch on the validation samples (PNGs drawn
with matplotlib, embedded), the per-epoch metrics and the parameters."""

from __future__ import annotations

import html

from ..analysis.evaluation_report import class_cell, table
from .report import learning_curves_png, split_map_png
from .report_page import RunReport, figure_png, image_section, page, parameters_section, warning_paragraphs


class DetectionReport(RunReport):
    """What was trained on which samples, how it learnt epoch by epoch, and how well the best epoch detects
    (``validation``: :meth:`analysis.detection_metrics.DetectionScores.result` of the best epoch on the validation
    samples)."""

    def html(self) -> str:
        return report_html(self)


def pr_curve_png(curves: dict[str, dict[str, list[float]]]) -> bytes | None:
    """Precision against recall per class (IoU 0.5) as a PNG (None without matplotlib or classes); a class without
    detections is named in the legend with no line."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    if not curves:
        return None
    figure = Figure(figsize=(5, 4), dpi=100)
    axes = figure.subplots()
    for name, curve in curves.items():
        axes.plot(curve["recall"], curve["precision"], "-", label=name if curve["recall"] else f"{name} (no detection)")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title("validation samples, IoU ≥ 0.5")
    axes.legend(loc="lower left", fontsize="small")
    return figure_png(figure)


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def report_html(report: DetectionReport) -> str:
    """A self-contained HTML page (no scripts, no external files); every value is escaped."""
    e = html.escape
    v, d = report.validation, report.data
    parts = ["<h1>Object detector training</h1>",
             f"<p>Package: {e(report.package)}<br>Data: {e(str(d.get('folder', '')))} "
             f"({e(str(d.get('layout', '')))}; {d.get('train_samples')} training, {d.get('validation_samples')} "
             f"validation samples of {d.get('tile_size')} px; split: {e(str(d.get('split', '')))})<br>"
             f"Best epoch: {report.best_epoch} of {len(report.history)} run ({e(report.stopped)})</p>"]
    parts += warning_paragraphs(report.warnings)
    parts.append(f"<h2>Validation samples, best epoch ({report.best_epoch})</h2>")
    parts.append(table(["metric", "value"], [["mAP@0.5", _number(v.get("map_50"))],
                                              ["mAP@[.5:.95]", _number(v.get("map_50_95"))],
                                              ["images", v.get("images")]]))
    classes = {c["value"]: {"name": c["name"], "value": c["value"], "colour": c.get("color")} for c in report.classes}
    parts.append(table(["class", "AP@0.5", "AP@[.5:.95]", "reference boxes", "detections", "best recall"],
                       [[class_cell(classes[c["value"]]), _number(c["ap_50"]), _number(c["ap_50_95"]),
                         c["reference_boxes"], c["detections"], f"{c['recall_max']:.4f}"] for c in v["per_class"]]))
    parts += image_section("Precision–recall curve", "precision-recall curve", pr_curve_png(v.get("pr_curves", {})))
    parts += image_section("Learning curves", "learning curves",
                           learning_curves_png(report.history, "validation_map_50", "validation mAP@0.5"))
    parts += image_section("Training and validation samples", "map of the split", split_map_png(report.chip_windows))
    parts.append("<h2>Epochs</h2>")
    parts.append(table(["epoch", "training loss", "validation mAP@0.5", "validation mAP@[.5:.95]", "learning rate",
                        "seconds"],
                       [[h["epoch"], h["train_loss"], _number(h["validation_map_50"]),
                         _number(h["validation_map_50_95"]), f"{h['learning_rate']:.3g}", f"{h['seconds']:.1f}"]
                        for h in report.history]))
    parts += parameters_section(report.parameters)
    return page("Object detector training", parts)
