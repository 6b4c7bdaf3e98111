"""A deterministic detector in package form and rasters of bright squares for it (tests and bench/bench_detect.py).

The detector (TorchScript) boxes every square of :data:`SIZE` px whose band-1 value (model units) exceeds 0.5: a
square's top-left pixel is bright with dark left and upper neighbours, its box ``(x, y, x + SIZE, y + SIZE)`` in
tile pixels; the label is 2 where band 1 exceeds 1.5, else 1; the score is band 2's value. A square a tile edge
cuts gets a wrong box from that tile (its visible part's corner): the merge must drop it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import torchscript_package

SIZE = 8
CLASSES = [{"value": 1, "name": "dim", "color": "#1f77b4"}, {"value": 2, "name": "bright", "color": "#ff7f0e"}]


def square_detector():
    """The scripted detector (needs torch)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    class SquareDetector(torch.nn.Module):
        def __init__(self, size: int) -> None:
            super().__init__()
            self.size = size

        def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
            bright = (x[:, 0] > 0.5).float()
            left = F.pad(bright, (1, 0, 0, 0))[:, :, :-1]
            top = F.pad(bright, (0, 0, 1, 0))[:, :-1, :]
            corner = (bright > 0) & (left == 0) & (top == 0)
            out: list[dict[str, torch.Tensor]] = []
            for i in range(x.shape[0]):
                idx = torch.nonzero(corner[i])
                ys, xs = idx[:, 0], idx[:, 1]
                boxes = torch.stack([xs, ys, xs + self.size, ys + self.size], 1).float()
                labels = (x[i, 0][ys, xs] > 1.5).long() + 1
                out.append({"boxes": boxes, "scores": x[i, 1][ys, xs], "labels": labels})
            return out

    return torch.jit.script(SquareDetector(SIZE))


def detection_package(folder: Path, tile: int = 64, overlap: int = 24, **changes) -> Path:
    """A detection package folder holding the square detector; raster values × 0.01 = model units."""
    return torchscript_package(folder, square_detector(), "detector.pt", "squares", "object_detection",
                               ["value", "score"], CLASSES, {"tile_size": tile, "overlap": overlap}, **changes)


def place_squares(edges_x: list[int], edges_y: list[int], width: int, height: int, seed: int = 0,
                  extra: int = 20) -> list[tuple[int, int]]:
    """Top-left corners of squares that straddle the given tile edges (x, y and both: corners) at random
    offsets, plus ``extra`` anywhere; at least 2 px from the raster's edges and 2 px from each other."""
    rng = np.random.default_rng(seed)
    wanted = [(e - int(rng.integers(1, SIZE)), int(rng.integers(2, height - SIZE - 2))) for e in edges_x]
    wanted += [(int(rng.integers(2, width - SIZE - 2)), e - int(rng.integers(1, SIZE))) for e in edges_y]
    wanted += [(ex - int(rng.integers(1, SIZE)), ey - int(rng.integers(1, SIZE))) for ex in edges_x for ey in edges_y]
    wanted += [(int(rng.integers(2, width - SIZE - 2)), int(rng.integers(2, height - SIZE - 2)))
               for _ in range(extra)]
    placed: list[tuple[int, int]] = []
    for x, y in wanted:
        inside = 2 <= x <= width - SIZE - 2 and 2 <= y <= height - SIZE - 2
        apart = all(abs(x - px) >= SIZE + 2 or abs(y - py) >= SIZE + 2 for px, py in placed)
        if inside and apart:
            placed.append((x, y))
    return placed


def square_raster(squares: list[tuple[int, int]], width: int, height: int, seed: int = 0) -> tuple[np.ndarray, list]:
    """Bands (value, score) as uint8 (× 0.01 = model units) and the truth ``(x, y, label, score)`` per square."""
    rng = np.random.default_rng(seed + 1)
    data = np.zeros((2, height, width), np.uint8)
    truth = []
    for x, y in squares:
        label = int(rng.integers(1, 3))
        score = int(rng.integers(30, 100))
        data[0, y:y + SIZE, x:x + SIZE] = 100 * label
        data[1, y:y + SIZE, x:x + SIZE] = score
        truth.append((x, y, label, score / 100))
    return data, truth
