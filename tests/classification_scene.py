"""A deterministic image classifier in package form and rasters of squares of three brightnesses for it (tests).

The classifier (TorchScript) takes chips of two bands (``value``, ``other``; raster values × 0.01 = model units)
and calls a chip "dark" (class value 1), "medium" (5) or "bright" (9) by the mean of band 1 over the central half of
the chip (the centre nearest to 0.15, 0.5 or 0.85); band 2 does not count. Its scores are ``-40 (mean − centre)²``,
so its softmax confidence is exact to compute. Squares are ``SQUARE`` px, on a dark background, one brightness
each, on a lattice of cells so that each chip of up to a cell sees one square.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import torchscript_package

CLASSES = [{"value": 1, "name": "dark", "color": "#222222"}, {"value": 5, "name": "medium", "color": "#1f77b4"},
           {"value": 9, "name": "bright", "color": "#ffdd00"}]
LEVELS = {1: 15, 5: 50, 9: 85}  # class value → raster value of band 1 (× 0.01 = model units)
SQUARE = 12
CELL = 40
UTM = (500000.0, 0.5, 0.0, 5800000.0, 0.0, -0.5)


def brightness_classifier():
    """The scripted classifier (needs torch)."""
    import torch

    class Brightness(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            size = x.shape[-1]
            q = size // 4
            mean = x[:, 0, q:size - q, q:size - q].mean(dim=(1, 2))
            centres = torch.tensor([0.15, 0.5, 0.85], dtype=x.dtype, device=x.device)
            return -40.0 * (mean[:, None] - centres[None, :]) ** 2

    return torch.jit.script(Brightness())


def classifier_package(folder: Path, chip: int = 16, **changes) -> Path:
    """An image-classification package folder holding the brightness classifier (chips of ``chip`` px)."""
    return torchscript_package(folder, brightness_classifier(), "classifier.pt", "brightness", "image_classification",
                               ["value", "other"], CLASSES, {"tile_size": chip, "activation": "softmax"}, **changes)


def squares_scene(cols: int = 6, rows: int = 4, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Bands (value, other) as uint8 and the truth ``(col, row, class value)`` of each square's top-left pixel:
    one square per cell at a random offset, of a random class; band 2 is noise."""
    rng = np.random.default_rng(seed)
    data = np.zeros((2, rows * CELL, cols * CELL), np.uint8)
    data[0] = 5
    data[1] = rng.integers(0, 100, data[1].shape)
    truth = []
    for j in range(rows):
        for i in range(cols):
            x = i * CELL + int(rng.integers(4, CELL - SQUARE - 4))
            y = j * CELL + int(rng.integers(4, CELL - SQUARE - 4))
            value = int(rng.choice(list(LEVELS)))
            data[0, y:y + SQUARE, x:x + SQUARE] = LEVELS[value]
            truth.append((x, y, value))
    return data, truth


def centre(x: int, y: int, geotransform=UTM) -> tuple[float, float]:
    """Map coordinates of a square's centre (square's top-left pixel ``x``, ``y``)."""
    g = geotransform
    return g[0] + (x + SQUARE / 2) * g[1], g[3] + (y + SQUARE / 2) * g[5]


def square_wkt(x: int, y: int, geotransform=UTM, grow: float = 0.0) -> str:
    """A square's outline as a WKT polygon (map units), ``grow`` pixels larger on every side."""
    g = geotransform
    x0, x1 = g[0] + (x - grow) * g[1], g[0] + (x + SQUARE + grow) * g[1]
    y0, y1 = g[3] + (y - grow) * g[5], g[3] + (y + SQUARE + grow) * g[5]
    return f"POLYGON (({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))"
