"""Running per-band statistics of the values a writer streams (so a GeoTIFF gets them without a second pass)."""

from __future__ import annotations

import numpy as np


class BandStatistics:
    """Running per-band count, sum, sum of squares, min and max of the finite values written (float64)."""

    def __init__(self, bands: int) -> None:
        self.count = np.zeros(bands, np.float64)
        self.sum = np.zeros(bands, np.float64)
        self.sumsq = np.zeros(bands, np.float64)
        self.min = np.full(bands, np.inf)
        self.max = np.full(bands, -np.inf)

    def add(self, data: np.ndarray) -> None:
        """Add rows ``(bands, rows, width)``; NaN (nodata) is left out."""
        x = data.reshape(data.shape[0], -1).astype(np.float64)
        finite = np.isfinite(x)
        self.count += finite.sum(axis=1)
        x = np.where(finite, x, 0.0)
        self.sum += x.sum(axis=1)
        self.sumsq += (x * x).sum(axis=1)
        if finite.any():
            self.min = np.minimum(self.min, np.where(finite, x, np.inf).min(axis=1))
            self.max = np.maximum(self.max, np.where(finite, x, -np.inf).max(axis=1))

    def summary(self) -> list[tuple[float, float, float, float] | None]:
        """Per band ``(min, max, mean, std)``, or None for a band without a finite value."""
        out: list[tuple[float, float, float, float] | None] = []
        for i in range(len(self.count)):
            n = self.count[i]
            if n == 0:
                out.append(None)
                continue
            mean = self.sum[i] / n
            std = float(np.sqrt(max(self.sumsq[i] / n - mean * mean, 0.0)))
            out.append((float(self.min[i]), float(self.max[i]), float(mean), std))
        return out

    def to_json(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("count", "sum", "sumsq", "min", "max")}

    @classmethod
    def from_json(cls, data: dict) -> BandStatistics:
        stats = cls(len(data["count"]))
        for k in ("count", "sum", "sumsq", "min", "max"):
            setattr(stats, k, np.asarray(data[k], np.float64))
        return stats
