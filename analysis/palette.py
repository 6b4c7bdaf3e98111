"""Distinct colours for class and cluster rasters (colour tables and QGIS paletted styles)."""

from __future__ import annotations

import colorsys

# Tableau 10 then its light variants: well separated, readable on a map.
_BASE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
)
NOISE_RGB = (60, 60, 60)
"""Colour of the "noise" class of density clusterings (DBSCAN, HDBSCAN, OPTICS)."""
NO_MATCH_RGB = (235, 235, 235)
"""Colour of the "no match" class of thresholded similarity maps."""


def category_colours(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct RGB colours: a fixed palette of 20, then hues spaced by the golden ratio."""
    colours = list(_BASE[:n])
    for i in range(len(colours), n):
        hue = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.65 if i % 2 else 0.9, 0.9 if i % 3 else 0.7)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours
