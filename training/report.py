"""The report of a training run: a JSON-ready dict and a self-contained HTML page with the learning curves (a PNG
drawn with matplotlib, embedded), the per-epoch metrics, and per-class IoU / precision / recall / F1 and the
confusion matrix of the best epoch on the validation chips (tables as in the class-map evaluation report)."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..analysis.evaluation_report import STYLE, cell, class_cell, class_label, table, write_reports


@dataclass
class TrainingReport:
    """What was trained on which chips, how it learnt epoch by epoch, and how well the best epoch does."""

    package: str
    data: dict[str, Any]
    parameters: dict[str, Any]
    history: list[dict[str, Any]]
    best_epoch: int
    stopped: str
    """"completed", "early stopping" or "cancelled"."""
    classes: list[dict[str, Any]]
    validation: dict[str, Any]
    """:func:`analysis.metrics.class_scores` of the best epoch on the validation chips."""
    final_weights_sha256: str = ""
    warnings: list[str] = field(default_factory=list)
    chip_windows: dict[str, list[list[int]]] = field(default_factory=dict)
    """Pixel windows (column, row, width, height) of the training and validation chips, when recorded."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, html_path: str | Path | None = None, json_path: str | Path | None = None) -> list[Path]:
        """Write the HTML and/or JSON report together (temporary names renamed at the end of the run)."""
        return write_reports(html_path, lambda: report_html(self), json_path, self.to_dict)


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
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


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
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def image_section(title: str, alt: str, png: bytes | None) -> list[str]:
    """A heading and the PNG embedded as a data URI (nothing without a PNG)."""
    if not png:
        return []
    return [f'<h2>{title}</h2><img alt="{alt}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">']


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
    parts += [f'<p class="warn">{e(w)}</p>' for w in report.warnings]
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
    classes = [{"name": c["name"], "value": c["value"], "colour": c.get("color")} for c in report.classes]
    parts.append(table(["class", "IoU", "precision", "recall", "F1", "reference pixels", "predicted pixels"],
                        [[class_cell(info), c["iou"], c["precision"], c["recall"], c["f1"], c["support"],
                          c["predicted"]] for info, c in zip(classes, v["per_class"], strict=True)]))
    cm = v["confusion_matrix"]
    parts.append("<h3>Confusion matrix (pixels; rows: reference, columns: predicted)</h3>")
    header = ["reference \\ predicted", *(class_label(n, k) for n, k in zip(cm["labels"], cm["values"], strict=True)),
              "total"]
    rows = [[class_cell(info), *(cell(x, "diag" if i == j else "") for j, x in enumerate(row)), sum(row)]
            for i, (info, row) in enumerate(zip(classes, cm["matrix"], strict=True))]
    rows.append(["total", *(sum(col) for col in zip(*cm["matrix"], strict=True)), v["n"]])
    parts.append(table(header, rows))
    parts.append("<h2>Parameters</h2>")
    parts.append(table(["parameter", "value"], [[k, str(x)] for k, x in report.parameters.items()]))
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Segmentation model training</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")
