"""The report of a class-map evaluation: a JSON-ready dict and a self-contained HTML page (confusion matrix,
per-class IoU / precision / recall / F1, mIoU, overall accuracy, kappa, pixel counts)."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..tiling.transaction import write_together

STYLE = ("body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0}"
         "td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}th{background:#eee}"
         "td:first-child,th:first-child{text-align:left}.warn{color:#a40}.diag{background:#e6f2e6}"
         ".swatch{display:inline-block;width:.9em;height:.9em;margin-right:.4em;border:1px solid #888}")


@dataclass
class EvaluationReport:
    """What was evaluated, on which pixels, and how well the class raster agrees with the reference."""

    class_raster: str
    reference: dict[str, Any]
    extent: dict[str, Any]
    pixels: dict[str, int]
    classes: list[dict[str, Any]]
    metrics: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def headline(self) -> dict[str, float | None]:
        """Overall accuracy, mIoU and kappa (fractions 0–1; kappa None when undefined)."""
        m = self.metrics
        return {"overall_accuracy": m["overall_accuracy"], "miou": m["miou"], "kappa": m["kappa"]}

    def summary(self) -> str:
        """One line for the log."""
        values = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" if v is not None else f"{k} undefined"
                           for k, v in self.headline().items())
        return f"{values} over {self.pixels['evaluated']} pixels."

    def write(self, html_path: str | Path | None = None, json_path: str | Path | None = None) -> list[Path]:
        """Write the HTML and/or JSON report together (temporary names renamed at the end)."""
        return write_reports(html_path, lambda: report_html(self), json_path, self.to_dict)


def write_reports(html_path: str | Path | None, html_text: Callable[[], str], json_path: str | Path | None,
                  data: Callable[[], dict[str, Any]]) -> list[Path]:
    """The HTML and/or JSON form of a report written together (temporary names renamed at the end); each form is
    made only when its path is given."""
    contents: dict[str | Path, str] = {}
    if html_path:
        contents[html_path] = html_text()
    if json_path:
        contents[json_path] = json.dumps(data(), indent=2) + "\n"
    return write_together(contents) if contents else []


def cell(value: Any, css: str = "") -> str:
    text = "–" if value is None else f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))
    return f'<td class="{css}">{text}</td>' if css else f"<td>{text}</td>"


def table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(v if isinstance(v, str) and v.startswith("<td") else cell(v) for v in row)
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def class_label(name: Any, value: int) -> str:
    """``name (value)``, or the value alone when the class has no name."""
    return str(value) if str(name) == str(value) else f"{name} ({value})"


def class_cell(info: dict[str, Any]) -> str:
    colour = info.get("colour")
    swatch = f'<span class="swatch" style="background:{html.escape(colour)}"></span>' if colour else ""
    return f"<td>{swatch}{html.escape(class_label(info['name'], info['value']))}</td>"


def report_html(report: EvaluationReport) -> str:
    """A self-contained HTML page (no scripts, no external files); every value is escaped."""
    e = html.escape
    m, ref = report.metrics, report.reference
    what = f"polygons of {ref.get('source', '')}, field {ref.get('field', '')}" if ref["kind"] == "polygons" \
        else f"class raster {ref.get('source', '')} (resampled: {ref.get('resampled', '')})"
    parts = ["<h1>Class map evaluation</h1>",
             f"<p>Class raster: {e(report.class_raster)}<br>Reference: {e(what)}<br>Extent (map units): "
             f"{e(', '.join(f'{v:.10g}' for v in report.extent['bounds']))}</p>"]
    parts += [f'<p class="warn">{e(w)}</p>' for w in report.warnings]
    parts.append("<h2>Accuracy</h2>")
    parts.append(table(["metric", "value"], [
        ["overall accuracy", m["overall_accuracy"]], ["mean IoU (classes in the reference)", m["miou"]],
        ["Cohen's kappa", m["kappa"]], ["macro F1 (classes in the reference)", m["macro_f1"]],
        ["pixels evaluated", report.pixels["evaluated"]], ["reference pixels", report.pixels["reference"]],
        ["reference pixels on class-raster nodata (left out)", report.pixels["reference_on_class_nodata"]]]))
    parts.append("<h2>Per class</h2>")
    parts.append(table(["class", "IoU", "precision", "recall", "F1", "reference pixels", "predicted pixels"],
                        [[class_cell(info), c["iou"], c["precision"], c["recall"], c["f1"], c["support"],
                          c["predicted"]] for info, c in zip(report.classes, m["per_class"], strict=True)]))
    cm = m["confusion_matrix"]
    parts.append("<h2>Confusion matrix (pixels; rows: reference, columns: class raster)</h2>")
    header = ["reference \\ predicted", *(class_label(n, v) for n, v in zip(cm["labels"], cm["values"], strict=True)),
              "total"]
    rows = []
    for i, (info, row) in enumerate(zip(report.classes, cm["matrix"], strict=True)):
        rows.append([class_cell(info), *(cell(v, "diag" if i == j else "") for j, v in enumerate(row)), sum(row)])
    rows.append(["total", *(sum(col) for col in zip(*cm["matrix"], strict=True)), m["n"]])
    parts.append(table(header, rows))
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Class map evaluation</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")
