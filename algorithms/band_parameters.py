"""Band numbers from a multiple band parameter, in every form a user types them.

QGIS 3.22's ``parameterAsInts`` splits a text value on ``;`` only and turns anything else into band 0, so
``BANDS=1,2,3,7`` on the ``qgis_process`` command line silently became ``[0]``. Here commas, semicolons and spaces
all separate band numbers, and a value that is not a band number is an error that says so.
"""

from __future__ import annotations

import re

from ..models.errors import BandMappingError

EXAMPLE = "e.g. 4;3;2 or 4,3,2"


def parse_band_numbers(value: str | list | tuple) -> list[int]:
    """1-based band numbers from text (``"1,2;3 4"``) or a list of numbers or texts; raises
    :class:`BandMappingError` for anything that is not a whole number of at least 1."""
    items = value if isinstance(value, (list, tuple)) else [value]
    tokens = [t for item in items for t in re.split(r"[,;\s]+", str(item).strip()) if t]
    bands = []
    for token in tokens:
        try:
            number = float(token)
        except ValueError:
            number = float("nan")
        if not (number == number and number.is_integer() and number >= 1):
            raise BandMappingError(f"{token!r} is not a band number: bands are numbered from 1. Give band numbers "
                                   f"separated by semicolons or commas ({EXAMPLE}).")
        bands.append(int(number))
    return bands


def band_numbers(algorithm, parameters: dict, name: str, context) -> list[int]:
    """The band numbers of parameter ``name`` (empty list: none given). Plain values (text, list) are parsed by
    :func:`parse_band_numbers`; anything else (an expression, a Model Builder source) goes through QGIS."""
    value = parameters.get(name)
    if value is None or value == "" or value == []:
        return []
    if isinstance(value, (str, int, list, tuple)):
        return parse_band_numbers(value if not isinstance(value, int) else str(value))
    return parse_band_numbers(algorithm.parameterAsInts(parameters, name, context))
