"""Class tables (value, name, colour) read from the files GIS users already have.

- CSV or text: one class per line, ``value, name, colour`` with the colour as ``#rrggbb`` (a header line naming the
  columns is skipped; ``;`` or tab also separate columns).
- QGIS colour map export (*Export color map to file* of a paletted or pseudocolour renderer): lines
  ``value,red,green,blue,alpha,label`` after ``#`` comments and an ``INTERPOLATION:`` line.
- QGIS layer style (``.qml``): the entries of a paletted renderer (``paletteEntry``) or of a colour ramp shader
  (``item``), as QGIS writes them for a class raster.

Classes come back in the file's order (the package lists them in the model's output-channel order), as
dictionaries ``{"value": int, "name": str, "color": "#rrggbb"}``.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from xml.etree import ElementTree

from .errors import ModelPackageError

HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
FORMATS = "a CSV of value, name, #rrggbb; a QGIS colour map export (.txt); or a QGIS style (.qml)"


def read_class_table(path: str | Path) -> list[dict]:
    """The classes listed in ``path`` (CSV/text, QGIS colour map export or .qml), in file order; raises
    :class:`ModelPackageError` naming the file and line for anything that is not a class."""
    path = Path(path)
    if not path.is_file():
        raise ModelPackageError(f"Class table {path} does not exist or is not a file. Give {FORMATS}.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelPackageError(f"Cannot read the class table {path.name} ({exc}). Give {FORMATS}.") from exc
    classes = _from_qml(text, path.name) if path.suffix.lower() == ".qml" else _from_text(text, path.name)
    if not classes:
        raise ModelPackageError(f"The class table {path.name} lists no classes. Give {FORMATS}.")
    values = [c["value"] for c in classes]
    if len(set(values)) != len(values):
        repeated = sorted({v for v in values if values.count(v) > 1})
        raise ModelPackageError(f"The class table {path.name} lists class value(s) {repeated} more than once.")
    return classes


def _from_text(text: str, name: str) -> list[dict]:
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#") and not line.upper().startswith("INTERPOLATION:")]
    if not lines:
        return []
    dialect = ";" if ";" in lines[0][1] else "\t" if "\t" in lines[0][1] else ","
    classes = []
    for number, line in lines:
        cells = [c.strip() for c in next(csv.reader([line], delimiter=dialect))]
        if number == lines[0][0] and not _is_number(cells[0]):
            continue  # a header line
        classes.append(_row_to_class(cells, f"{name} line {number}"))
    return classes


def _row_to_class(cells: list[str], where: str) -> dict:
    """``value, name, #rrggbb`` or QGIS's ``value, r, g, b, alpha, label``."""
    if len(cells) >= 6 and all(_is_number(c) for c in cells[:5]):
        rgb = [_channel(c, where) for c in cells[1:4]]
        return _class(cells[0], ",".join(cells[5:]), "#{:02x}{:02x}{:02x}".format(*rgb), where)
    if len(cells) == 3:
        return _class(*cells, where)
    raise ModelPackageError(f"{where}: expected 'value, name, #rrggbb' or a QGIS colour map line "
                            f"'value, red, green, blue, alpha, label', got {', '.join(cells)!r}.")


def _from_qml(text: str, name: str) -> list[dict]:
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise ModelPackageError(f"{name} is not a readable QGIS style file ({exc}).") from exc
    entries = root.findall(".//paletteEntry") or root.findall(".//colorrampshader/item")
    if not entries and root.find(".//rasterrenderer") is not None:
        raise ModelPackageError(f"The style {name} has no class colours: save the style of a class raster rendered "
                                "as 'Paletted/Unique values' (or 'Singleband pseudocolor' with exact classes).")
    return [_class(entry.get("value", ""), entry.get("label") or entry.get("value", ""),
                   (entry.get("color") or "")[:7], f"{name} entry {i}")
            for i, entry in enumerate(entries, 1)]


def _class(value: str, label: str, colour: str, where: str) -> dict:
    if not _is_number(value) or float(value) != int(float(value)) or not 0 <= float(value) <= 254:
        raise ModelPackageError(f"{where}: class value {value!r} is not a whole number from 0 to 254.")
    if not HEX_COLOUR.match(colour):
        raise ModelPackageError(f"{where}: colour {colour!r} is not of the form #rrggbb (e.g. #3a9d23).")
    label = label.strip()
    if not label:
        raise ModelPackageError(f"{where}: class {value} has no name.")
    return {"value": int(float(value)), "name": label, "color": colour.lower()}


def _channel(cell: str, where: str) -> int:
    number = float(cell)
    if not (number.is_integer() and 0 <= number <= 255):
        raise ModelPackageError(f"{where}: colour component {cell!r} is not a whole number from 0 to 255.")
    return int(number)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
