"""The scaffolding of a training run's report (segmentation and detection alike): the fields both record, the JSON
dict, writing HTML and JSON together, and the pieces of the self-contained HTML page (embedded PNGs, warnings,
parameters, the page itself)."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..analysis.evaluation_report import STYLE, table, write_reports


@dataclass
class RunReport:
    """What was trained on which data, how it learnt epoch by epoch, and how well the best epoch does; a subclass
    renders the HTML page (:meth:`html`)."""

    package: str
    data: dict[str, Any]
    parameters: dict[str, Any]
    history: list[dict[str, Any]]
    best_epoch: int
    stopped: str
    """"completed", "early stopping" or "cancelled"."""
    classes: list[dict[str, Any]]
    validation: dict[str, Any]
    """The scores of the best epoch on the validation data."""
    final_weights_sha256: str = ""
    warnings: list[str] = field(default_factory=list)
    chip_windows: dict[str, list[list[int]]] = field(default_factory=dict)
    """Pixel windows (column, row, width, height) of the training and validation chips, when recorded."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def html(self) -> str:
        """The self-contained HTML page."""
        raise NotImplementedError

    def write(self, html_path: str | Path | None = None, json_path: str | Path | None = None) -> list[Path]:
        """Write the HTML and/or JSON report together (temporary names renamed at the end of the run)."""
        return write_reports(html_path, self.html, json_path, self.to_dict)


def figure_png(figure) -> bytes:
    """A matplotlib figure, laid out tight, as PNG bytes."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def image_section(title: str, alt: str, png: bytes | None) -> list[str]:
    """A heading and the PNG embedded as a data URI (nothing without a PNG)."""
    if not png:
        return []
    return [f'<h2>{title}</h2><img alt="{alt}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">']


def warning_paragraphs(warnings: list[str]) -> list[str]:
    """One escaped warning paragraph per warning."""
    return [f'<p class="warn">{html.escape(w)}</p>' for w in warnings]


def parameters_section(parameters: dict[str, Any]) -> list[str]:
    """The "Parameters" heading and table."""
    return ["<h2>Parameters</h2>", table(["parameter", "value"], [[k, str(x)] for k, x in parameters.items()])]


def page(title: str, parts: list[str]) -> str:
    """The self-contained page of ``parts`` under ``title`` (no scripts, no external files)."""
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")
