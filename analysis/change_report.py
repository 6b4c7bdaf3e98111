"""The from–to area table of a class change, as CSV (one row per pair) and as a small HTML page."""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path

from ..tiling.transaction import write_together
from .change_classes import UNCHANGED, ChangeTable

COLUMNS = ("code", "change", "from_value", "from_name", "to_value", "to_name", "changed", "pixels", "area_map_units2",
           "hectares", "percent", "area_m2")
"""The CSV's columns (``area_m2`` added last: tables read by column position keep working)."""


def table_rows(table: ChangeTable) -> list[dict[str, object]]:
    """One dict per from–to pair (the CSV's columns); percent of all compared pixels."""
    _, total = table.totals()
    return [{"code": r.code if r.code != UNCHANGED else "", "change": r.name if r.code != UNCHANGED else
             f"no change ({r.from_name})", "from_value": r.from_value, "from_name": r.from_name,
             "to_value": r.to_value, "to_name": r.to_name, "changed": int(r.code != UNCHANGED), "pixels": r.pixels,
             "area_m2": "" if r.square_metres is None else _significant(r.square_metres),
             "hectares": "" if r.hectares is None else _significant(r.hectares),
             "area_map_units2": _significant(r.area),
             "percent": round(100.0 * r.pixels / total, 4) if total else 0.0} for r in table.rows]


def _significant(value: float) -> float:
    """``value`` to 9 significant digits (areas in degrees² are tiny; in m² large)."""
    return float(f"{value:.9g}")


def table_csv(table: ChangeTable) -> str:
    """The table as CSV text (comma-separated, a header line)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table_rows(table))
    return buffer.getvalue()


def table_html(table: ChangeTable, first: str, second: str) -> str:
    """The table as an HTML page: totals, then one line per pair (changed pairs first, largest first)."""
    changed, total = table.totals()
    unit = "ha" if table.metres else "map units²"
    rows = sorted(table_rows(table), key=lambda r: (-int(r["changed"]), -int(r["pixels"])))
    cells = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(str(r[k]))}</td>" for k in
                         ("code", "change", "pixels",
                          "hectares" if table.metres else "area_map_units2", "percent")) + "</tr>"
        for r in rows)
    share = 100.0 * changed / total if total else 0.0
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>From–to change</title><style>"
        "body{font-family:sans-serif}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
        "td:nth-child(2){text-align:left}</style></head><body>"
        f"<h1>From–to change</h1><p>From <code>{html.escape(first)}</code><br>to <code>{html.escape(second)}</code></p>"
        f"<p>{changed} of {total} compared pixels changed ({share:.2f} %); pixel area {html.escape(table.pixel_area)}."
        f"</p><table><tr><th>code</th><th>from → to</th><th>pixels</th><th>area ({unit})</th>"
        f"<th>%</th></tr>\n{cells}\n</table></body></html>\n")


def write_tables(table: ChangeTable, csv_path: str | None, html_path: str | None, first: str,
                 second: str) -> list[Path]:
    """Write the CSV and/or HTML table together (temporary names renamed at the end of the run)."""
    contents: dict[str, str] = {}
    if csv_path:
        contents[csv_path] = table_csv(table)
    if html_path:
        contents[html_path] = table_html(table, first, second)
    return write_together(contents) if contents else []
