"""The parameters "Run over a collection" hands to the algorithm it runs: the JSON object the user gives, checked
against that algorithm's parameters, the outputs named per input, and the band count every input needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..models.sources import open_model
from ..tiling.collection import BandNeed
from ..tiling.errors import DeepRasterError
from .band_parameters import parse_band_numbers
from .base import enum_index

MAIN_OUTPUTS = {"classify_pixels": "OUTPUT_CLASSES", "extract_features": "OUTPUT", "apply_model": "OUTPUT"}
"""The algorithms a collection can run, and the output named after each input (the one the mosaic is made of)."""
EXAMPLE = '{"MODEL": "/path/to/model.json", "DEVICE": "cpu"}'


class CollectionParameterError(DeepRasterError):
    """The parameters given for the collection's algorithm do not fit it."""


def parse_parameters(text: str, child, main: str) -> dict[str, Any]:
    """The JSON object ``text`` as parameter values of ``child`` (a QgsProcessingAlgorithm): every key one of its
    parameters, INPUT and the main output left out (they are set per input)."""
    text = (text or "").strip()
    try:
        values = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise CollectionParameterError(f"The algorithm's parameters are not valid JSON ({exc.msg} at character "
                                       f"{exc.pos}). Give a JSON object, e.g. {EXAMPLE}.") from exc
    if not isinstance(values, dict):
        raise CollectionParameterError(f"The algorithm's parameters must be a JSON object of parameter names and "
                                       f"values, e.g. {EXAMPLE}; got {type(values).__name__}.")
    known = [d.name() for d in child.parameterDefinitions()]
    for key in values:
        if key in ("INPUT", main):
            raise CollectionParameterError(f"{key} is set for each raster of the collection (the input, and its "
                                           f"output named after it in the output folder): leave it out of the "
                                           "parameters.")
        if key not in known:
            raise CollectionParameterError(f"{child.name()} has no parameter {key!r}. Its parameters are: "
                                           f"{', '.join(k for k in known if k not in ('INPUT', main))}.")
    return values


def extra_outputs(child, main: str, values: dict[str, Any]) -> tuple[list[tuple[str, str, str]], dict[str, Any]]:
    """The other outputs of ``child`` written per input (``(name, suffix, extension)``: those it always writes,
    and optional ones given as ``true``), and ``values`` with the optional ones not asked for switched off."""
    extras, values = [], dict(values)
    for definition in child.destinationParameterDefinitions():
        name = definition.name()
        if name == main:
            continue
        wanted = values.pop(name, None)
        optional = bool(definition.flags() & definition.FlagOptional)
        if isinstance(wanted, str) and wanted.strip().lower() not in ("true", "false", ""):
            raise CollectionParameterError(f"{name} is written once per input, named after it in the output folder: "
                                           "give true to write it, or leave it out.")
        if optional and wanted not in (True, "true", "TRUE", "True"):
            values[name] = None
            continue
        suffix = name.lower().removeprefix("output_") or "output"
        extension = definition.defaultFileExtension() if hasattr(definition, "defaultFileExtension") else "tif"
        extras.append((name, suffix, f".{extension or 'tif'}"))
    return extras, values


def band_need(algorithm: str, values: dict[str, Any], child) -> BandNeed | None:
    """How many bands each input must have for ``algorithm`` run with ``values`` (None: any count works, or the
    algorithm itself says)."""
    bands = parse_band_numbers(values["BANDS"]) if values.get("BANDS") not in (None, "", []) else []
    model = values.get("MODEL")
    if algorithm == "extract_features":
        encoder = values.get("ENCODER", 0)
        index = enum_index(child.parameterDefinition("ENCODER"), encoder)
        if (index if index is not None else _int(encoder)) != 0:
            return None  # a timm encoder adapts to any band count
    if bands:
        return BandNeed(max(bands), False, f"BANDS ({', '.join(map(str, bands))})")
    if not model:
        return None
    if algorithm in ("classify_pixels", "extract_features"):
        package = open_model(str(model), verify_checksum=False)  # the run checks the weights
        return BandNeed(len(package.bands), False,
                        f"the model {package.name} ({', '.join(package.band_names)})")
    description = Path(f"{model}.json")
    try:
        meta = json.loads(description.read_text(encoding="utf-8"))
        names = [str(n) for n in meta["band_names"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no description: Apply a saved model checks the band count itself
    return BandNeed(len(names), True, f"the saved model {Path(str(model)).name} (bands {', '.join(names)})")


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
