"""Which raster bands feed which model inputs: matched by name or given as band numbers."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import BandMappingError
from .spec import BandSpec


def _describe_raster(descriptions: Sequence[str]) -> str:
    return ", ".join(f"{i + 1}: {d!r}" if d else f"{i + 1}: (no description)" for i, d in enumerate(descriptions))


def _describe_band(band: BandSpec) -> str:
    return f"{band.name} ({', '.join(band.aliases)})" if band.aliases else band.name


def match_bands_by_name(model_bands: Sequence[BandSpec], descriptions: Sequence[str]) -> list[int]:
    """1-based raster band numbers, in model order, whose descriptions name the model's bands.

    Raises :class:`BandMappingError` naming the bands not found and listing the raster's band descriptions.
    """
    numbers, missing = [], []
    for band in model_bands:
        found = [i + 1 for i, d in enumerate(descriptions) if band.matches(d)]
        if found:
            numbers.append(found[0])
        else:
            missing.append(band)
    if missing:
        raise BandMappingError(
            "The raster's band names do not match the model's input bands. Not found: "
            f"{'; '.join(_describe_band(b) for b in missing)}. "
            f"The raster's bands are: {_describe_raster(descriptions)}."
            f" Give the band numbers explicitly (in the model's order: {', '.join(b.name for b in model_bands)}), "
            "or set band descriptions on the raster."
        )
    return numbers


def check_band_numbers(numbers: Sequence[int], model_bands: Sequence[BandSpec], band_count: int) -> list[int]:
    """Validate explicit 1-based band numbers against the model's band count and the raster's bands."""
    if len(numbers) != len(model_bands):
        raise BandMappingError(
            f"The model expects {len(model_bands)} bands ({', '.join(b.name for b in model_bands)}) but "
            f"{len(numbers)} band number(s) were given ({', '.join(map(str, numbers))}). "
            f"Give exactly {len(model_bands)} band numbers in the model's order."
        )
    bad = [n for n in numbers if not 1 <= n <= band_count]
    if bad:
        raise BandMappingError(
            f"Band number(s) {', '.join(map(str, bad))} do not exist: the raster has {band_count} band(s). "
            f"Choose band numbers between 1 and {band_count}."
        )
    return list(numbers)


def find_band(descriptions: Sequence[str], names: Sequence[str]) -> int | None:
    """The first 1-based band whose description is one of ``names`` (case-insensitive), or None."""
    wanted = {n.lower() for n in names}
    for i, d in enumerate(descriptions):
        if d.strip().lower() in wanted:
            return i + 1
    return None
