"""The report of a detector training run: a JSON-ready dict and a self-contained HTML page with the learning curves,
the precision–recall curve at IoU 0.5 and the AP per class of the best epoch on the validation samples (PNGs drawn
with matplotlib, embedded), the per-epoch metrics and the parameters."""

from __future__ import annotations

import html
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..analysis.evaluation_report import STYLE, class_cell, table, write_reports
from .report import image_section, learning_curves_png, split_map_png


@dataclass
class DetectionReport:
    """What was trained on which samples, how it learnt epoch by epoch, and how well the best epoch detects."""

    package: str
    data: dict[str, Any]
    parameters: dict[str, Any]
    history: list[dict[str, Any]]
    best_epoch: int
    stopped: str
    """"completed", "early stopping" or "cancelled"."""
    classes: list[dict[str, Any]]
    validation: dict[str, Any]
    """:meth:`analysis.detection_metrics.DetectionScores.result` of the best epoch on the validation samples."""
    final_weights_sha256: str = ""
    warnings: list[str] = field(default_factory=list)
    chip_windows: dict[str, list[list[int]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, html_path: str | Path | None = None, json_path: str | Path | None = None) -> list[Path]:
        """Write the HTML and/or JSON report together (temporary names renamed at the end of the run)."""
        return write_reports(html_path, lambda: report_html(self), json_path, self.to_dict)


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
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


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
    parts += [f'<p class="warn">{e(w)}</p>' for w in report.warnings]
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
    parts.append("<h2>Parameters</h2>")
    parts.append(table(["parameter", "value"], [[k, str(x)] for k, x in report.parameters.items()]))
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Object detector training</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")
