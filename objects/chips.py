"""Chips around features: where a feature's chip lies in the raster, and the chip read, normalised and resampled
to the classifier's input size.

A chip is a square in map units (the feature's extent, made square about its centre, plus a buffer on every side)
or a square of a fixed number of raster pixels centred on the feature. Pixel coordinates are fractional raster
pixels (``col`` to the right, ``row`` down; pixel ``(c, r)`` covers ``[c, c + 1) × [r, r + 1)``).

Resampling is area-weighted and ignores invalid pixels: each output pixel averages ``k × k`` bilinear samples of
its footprint (``k`` = input pixels per output pixel, at most :data:`MAX_SAMPLES`), counting only valid pixels
(normalised convolution: nodata, NaN, masked and off-raster pixels carry no weight); an output pixel with no valid
pixel under it is 0, as the engine fills invalid pixels. Chip windows wider than :data:`MAX_READ` px are read
decimated by GDAL (nearest neighbour), so one chip's memory is bounded whatever the feature's size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from osgeo import gdal

from ..tiling.reader import InputTransform
from ..tiling.source import RasterSource, pixel_validity, read_failure
from ..tiling.window import Window, map_to_pixel_float

gdal.UseExceptions()

MAX_READ = 2048
"""Pixels per side read at full resolution for one chip; larger chip windows are read decimated."""
MAX_SAMPLES = 8
"""Bilinear samples per output pixel and axis, at most (area averaging when a chip shrinks)."""
PixelBox = tuple[float, float, float, float]
"""``(col0, row0, col1, row1)``: a rectangle in fractional raster pixels."""


def chip_box(envelope: Sequence[float], geotransform: Sequence[float], buffer: float = 0.0,
             pixels: float | None = None) -> PixelBox:
    """The chip of a feature with envelope ``(xmin, xmax, ymin, ymax)`` (map units, raster CRS) in raster pixels.

    ``pixels``: a square of that many raster pixels centred on the envelope's centre. Otherwise the envelope made
    square about its centre (side: its longer side) plus ``buffer`` map units on every side; its pixel box is the
    bounding box of its corners' pixel positions (rotated rasters give a slightly larger box).
    """
    xmin, xmax, ymin, ymax = envelope
    cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
    if pixels:
        col, row = map_to_pixel_float(geotransform, cx, cy)
        half_px = pixels / 2
        return float(col) - half_px, float(row) - half_px, float(col) + half_px, float(row) + half_px
    half = max(xmax - xmin, ymax - ymin) / 2 + buffer
    cols, rows = map_to_pixel_float(geotransform, np.array([cx - half, cx + half, cx + half, cx - half]),
                                    np.array([cy - half, cy - half, cy + half, cy + half]))
    return float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max())


def feature_chip_box(envelope: Sequence[float], geotransform: Sequence[float], buffer: float, chip_pixels: int | None,
                     size: int) -> PixelBox:
    """The chip of a feature as Classify objects cuts it: ``chip_pixels`` raster pixels when given; otherwise the
    envelope made square plus ``buffer`` map units, except that a point without a buffer takes ``size`` (the
    classifier's chip size) raster pixels."""
    point = envelope[0] == envelope[1] and envelope[2] == envelope[3]
    own = chip_pixels or (size if point and not buffer else None)
    return chip_box(envelope, geotransform, buffer, own)


def footprint_window(envelope: Sequence[float], geotransform: Sequence[float]) -> Window:
    """The raster pixels a feature's envelope touches (a point: the pixel holding it); not clipped."""
    xmin, xmax, ymin, ymax = envelope
    cols, rows = map_to_pixel_float(geotransform, np.array([xmin, xmax, xmax, xmin]),
                                    np.array([ymin, ymin, ymax, ymax]))
    eps = 1e-6  # an edge exactly on a pixel edge does not take the next pixel
    c0, r0 = math.floor(cols.min() + eps), math.floor(rows.min() + eps)
    c1, r1 = math.ceil(cols.max() - eps), math.ceil(rows.max() - eps)
    return Window(c0, r0, max(c1 - c0, 1), max(r1 - r0, 1))


def outer_window(box: PixelBox) -> Window:
    """The whole pixels a fractional pixel box touches (not clipped)."""
    c0, r0 = math.floor(box[0]), math.floor(box[1])
    return Window(c0, r0, max(math.ceil(box[2]) - c0, 1), max(math.ceil(box[3]) - r0, 1))


@dataclass(frozen=True)
class ChipRead:
    """What reading one feature's chip gave: ``chip`` ``(bands, size, size)`` float32, or None with ``reason``
    ``"outside"`` (the feature does not touch the raster) or ``"nodata"`` (no valid pixel under the feature)."""

    chip: np.ndarray | None
    reason: str = ""


class ChipReader:
    """Reads chips of one raster with one GDAL handle (use as a context manager).

    Args:
        source: the raster.
        transform: raw values → model input (bands in model order, scale, normalisation).
        size: the chip edge the classifier takes (px).
        fill: the value of chip pixels without any valid pixel under them (0, as the classifier sees them; NaN to
            tell them apart, as the training export writes them).
    """

    def __init__(self, source: RasterSource, transform: InputTransform, size: int, fill: float = 0.0) -> None:
        self.source, self.transform, self.size, self.fill = source, transform, size, fill
        self.bands = list(transform.bands)
        try:
            self.ds = gdal.Open(source.path, gdal.GA_ReadOnly)
        except RuntimeError as exc:
            raise read_failure(source.path, exc) from exc

    def read(self, box: PixelBox, footprint: Window) -> ChipRead:
        """The chip over ``box`` (raster pixels), or why there is none; ``footprint`` is the feature's own pixels
        (outside: it does not touch the raster; nodata: none of its pixels in the chip's read is valid)."""
        if footprint.intersection(self.source.window).is_empty:
            return ChipRead(None, "outside")
        window = outer_window(box).intersection(self.source.window)
        if window.is_empty:
            return ChipRead(None, "outside")
        data, valid, scale = self._read(window)
        own = footprint.intersection(window).relative_to(window)
        rows = slice(math.floor(own.row_off / scale[1]), max(math.ceil(own.row_end / scale[1]),
                                                              math.floor(own.row_off / scale[1]) + 1))
        cols = slice(math.floor(own.col_off / scale[0]), max(math.ceil(own.col_end / scale[0]),
                                                              math.floor(own.col_off / scale[0]) + 1))
        if not valid[rows, cols].any():
            return ChipRead(None, "nodata")
        local = ((box[0] - window.col_off) / scale[0], (box[1] - window.row_off) / scale[1],
                 (box[2] - window.col_off) / scale[0], (box[3] - window.row_off) / scale[1])
        return ChipRead(resample(data, valid, local, self.size, self.fill))

    def _read(self, window: Window) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        """Normalised data ``(bands, h, w)`` (0 where invalid), validity ``(h, w)`` and the raster pixels per read
        pixel ``(x, y)`` of a window (decimated when wider than :data:`MAX_READ`)."""
        step = max(1, math.ceil(max(window.width, window.height) / MAX_READ))
        width, height = math.ceil(window.width / step), math.ceil(window.height / step)
        buffer = (width, height) if step > 1 else None
        try:
            raw = self.ds.ReadAsArray(window.col_off, window.row_off, window.width, window.height,
                                      buf_xsize=width, buf_ysize=height, band_list=self.bands)
            raw = raw.reshape(len(self.bands), height, width)
            valid = pixel_validity(self.source, self.ds, window, {b: raw[i] for i, b in enumerate(self.bands)},
                                   buffer)
        except RuntimeError as exc:
            raise read_failure(self.source.path, exc) from exc
        data = self.transform.apply(raw)
        valid &= np.isfinite(data).all(axis=0)
        data[:, ~valid] = 0.0
        return data, valid, (window.width / width, window.height / height)

    def close(self) -> None:
        self.ds = None

    def __enter__(self) -> ChipReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def resample(data: np.ndarray, valid: np.ndarray, box: PixelBox, size: int, fill: float = 0.0) -> np.ndarray:
    """``data`` ``(bands, h, w)`` over the pixel box ``box`` (in ``data``'s pixels, may reach outside it) as a
    ``(bands, size, size)`` float32 chip: area-weighted bilinear sampling over the valid pixels only (see the
    module docstring); ``fill`` where no valid pixel lies under an output pixel."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    bands, height, width = data.shape
    span = max(box[2] - box[0], box[3] - box[1])
    k = int(min(MAX_SAMPLES, max(1, math.ceil(span / size))))
    n = size * k
    steps = (np.arange(n, dtype=np.float64) + 0.5) / n
    xs = box[0] + steps * (box[2] - box[0])
    ys = box[1] + steps * (box[3] - box[1])
    gx = torch.from_numpy(2 * xs / width - 1).float()  # align_corners=False: -1 / 1 are the outer pixel edges
    gy = torch.from_numpy(2 * ys / height - 1).float()
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]
    weight = torch.from_numpy(valid.astype(np.float32))[None]
    stack = torch.cat([torch.from_numpy(data), weight])[None]  # data is 0 where invalid: weight × value
    sampled = F.grid_sample(stack, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if k > 1:
        sampled = F.avg_pool2d(sampled, k)
    total, counted = sampled[0, :bands], sampled[0, bands:]
    chip = torch.where(counted > 1e-6, total / counted.clamp_min(1e-6), torch.full((), float(fill)))
    return chip.numpy().astype(np.float32, copy=False)
