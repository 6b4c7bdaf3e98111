"""Blending weights for overlapping tile predictions.

A tile's weight is the outer product of two 1-D profiles. On a side where a neighbouring tile continues the grid,
the profile rises over ``overlap`` pixels as a half Hann window, ``sin²(π/2 · (i + ½) / overlap)``; two such ramps
of neighbouring tiles sum to one where they overlap regularly, so the weighted mean is seamless. On a side at the
edge of the processed region there is no neighbour and the profile stays at 1, so border pixels keep full weight
(a plain Hann window would send them to zero). Weights are never exactly zero inside a tile.

``centre_crop`` is the classic alternative (each tile contributes only its central part): kept for comparison.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_FLOOR = 1e-6  # weight given where a profile would be zero, so every covered pixel keeps a defined mean


@lru_cache(maxsize=64)
def _hann_profile(size: int, ramp: int, taper_start: bool, taper_end: bool) -> np.ndarray:
    profile = np.ones(size, dtype=np.float32)
    ramp = min(ramp, size // 2)
    if ramp > 0:
        rise = np.sin(0.5 * np.pi * (np.arange(ramp, dtype=np.float64) + 0.5) / ramp) ** 2
        if taper_start:
            profile[:ramp] = rise
        if taper_end:
            profile[size - ramp:] = rise[::-1]
    profile.setflags(write=False)
    return profile


@lru_cache(maxsize=64)
def _crop_profile(size: int, margin: int, crop_start: bool, crop_end: bool) -> np.ndarray:
    profile = np.ones(size, dtype=np.float32)
    if crop_start:
        profile[:margin] = _FLOOR
    if crop_end and margin:
        profile[size - margin:] = _FLOOR
    profile.setflags(write=False)
    return profile


def tile_weights(size: int, overlap: int, open_sides: tuple[bool, bool, bool, bool],
                 method: str = "hann") -> np.ndarray:
    """The ``(size, size)`` float32 weight of one tile.

    Args:
        size: tile edge in output pixels.
        overlap: overlap between neighbouring tiles in output pixels.
        open_sides: (top, bottom, left, right): True where a neighbouring tile continues the grid.
        method: ``"hann"`` (edge-aware Hann ramps) or ``"centre_crop"`` (keep the central part only).
    """
    top, bottom, left, right = open_sides
    if method == "hann":
        rows, cols = _hann_profile(size, overlap, top, bottom), _hann_profile(size, overlap, left, right)
    elif method == "centre_crop":
        half = overlap // 2
        rows, cols = _crop_profile(size, half, top, bottom), _crop_profile(size, half, left, right)
    else:
        raise ValueError(f"unknown blending method {method!r}: use 'hann' or 'centre_crop'")
    return np.maximum(np.outer(rows, cols), _FLOOR).astype(np.float32)
