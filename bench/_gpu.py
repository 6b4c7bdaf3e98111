"""Helpers of ``bench_gpu.py`` that need no GPU: timing a predictor or a bare model over batches of tiles, peak
GPU memory, class agreement of two class rasters, the verdicts against the bars of issue 15 and the stdout table.

Throughput is in Mpx/s of tile pixels fed to the model (tiles × tile² per second) unless a name says raster
pixels. Times are seconds of wall clock (``time.perf_counter``); a CUDA timing synchronises before reading the
clock, so queued kernels are counted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

AGREEMENT_BARS = {"float32": 99.9, "float16": 99.5, "bfloat16": 99.5}
"""Least class agreement with the CPU result, percent of pixels valid in both (issue 15)."""
EFFICIENCY_TARGET = 0.9
"""End-to-end throughput ÷ bare forward throughput at the same tile and batch size (issue 15)."""
CLASS_NODATA = 255


def class_agreement(a: np.ndarray, b: np.ndarray, nodata: int = CLASS_NODATA) -> dict[str, float]:
    """Percent of pixels with the same class among those valid in both rasters, and percent of pixels valid in
    exactly one of them (a disagreement about nodata)."""
    if a.shape != b.shape:
        raise ValueError(f"class rasters of different shapes: {a.shape} and {b.shape}")
    valid_a, valid_b = a != nodata, b != nodata
    both = valid_a & valid_b
    n = int(both.sum())
    same = float((a[both] == b[both]).sum()) / n if n else 0.0
    return {"agreement_percent": round(100.0 * same, 4), "pixels_compared": n,
            "validity_differs_percent": round(100.0 * float((valid_a ^ valid_b).mean()), 4)}


def class_fractions(classes: np.ndarray, values: Sequence[int], nodata: int = CLASS_NODATA) -> list[float]:
    """Percent of valid pixels in each class of ``values``."""
    valid = classes[classes != nodata]
    return [round(100.0 * float((valid == v).mean()), 2) if valid.size else 0.0 for v in values]


def mpx_per_s(tiles: int, tile: int, seconds: float) -> float:
    """Tile megapixels per second (0 for a zero time)."""
    return round(tiles * tile * tile / seconds / 1e6, 3) if seconds > 0 else 0.0


def synchronizer(device: str) -> Callable[[], None]:
    """A function that waits for every queued kernel of ``device`` (nothing to wait for on the CPU)."""
    if not device.startswith("cuda"):
        return lambda: None
    import torch

    return lambda: torch.cuda.synchronize(device)


@contextlib.contextmanager
def peak_gpu_memory(device: str) -> Iterator[dict[str, float | None]]:
    """Yields a dict whose ``peak_gpu_mib`` is, after the block, ``torch.cuda.max_memory_allocated`` during it in
    MiB (None off CUDA; memory of ONNX Runtime is not PyTorch's and is not counted)."""
    out: dict[str, float | None] = {"peak_gpu_mib": None}
    if not device.startswith("cuda"):
        yield out
        return
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        yield out
    finally:
        torch.cuda.synchronize(device)
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def time_predictor(predict: Callable[[np.ndarray], np.ndarray], tiles: np.ndarray, batch: int) -> float:
    """Seconds for ``predict`` over every tile in batches of ``batch`` (one untimed warm-up batch first). The
    predictor hands back host arrays, so each call has finished when it returns."""
    predict(np.ascontiguousarray(tiles[:batch]))
    start = time.perf_counter()
    for i in range(0, len(tiles), batch):
        predict(np.ascontiguousarray(tiles[i:i + batch]))
    return time.perf_counter() - start


def time_model_forward(model: Any, tiles: np.ndarray, batch: int, device: str, dtype: Any) -> float:
    """Seconds for the bare network over every tile, inputs already on ``device`` in ``dtype``: no transfer,
    no activation, no copy back (the ceiling of what any pipeline can reach)."""
    import torch

    sync = synchronizer(device)
    inputs = [torch.from_numpy(np.ascontiguousarray(tiles[i:i + batch])).to(device=device, dtype=dtype)
              for i in range(0, len(tiles), batch)]
    with torch.inference_mode():
        model(inputs[0])
        sync()
        start = time.perf_counter()
        for x in inputs:
            model(x)
        sync()
        seconds = time.perf_counter() - start
    del inputs
    return seconds


def sweep_batches(make_predict: Callable[[], Callable[[np.ndarray], np.ndarray]], tiles: np.ndarray,
                  batches: Sequence[int], device: str, model: Any = None, dtype: Any = None) -> list[dict[str, Any]]:
    """Throughput of the predictor (and of the bare ``model`` when given) at each batch size; a batch size that
    runs out of GPU memory ends the sweep with a note. Freed memory is kept for reuse as in a run (on the CPU
    that halves the forward time, see :mod:`tiling.allocator`)."""
    from deepraster.tiling.allocator import freed_memory_kept

    with freed_memory_kept():
        return _sweep(make_predict, tiles, batches, device, model, dtype)


def _sweep(make_predict: Callable[[], Callable[[np.ndarray], np.ndarray]], tiles: np.ndarray,
           batches: Sequence[int], device: str, model: Any, dtype: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    tile = tiles.shape[-1]
    predict = make_predict()
    for batch in batches:
        row: dict[str, Any] = {"batch": batch}
        try:
            with peak_gpu_memory(device) as peak:
                row["predictor_s"] = round(time_predictor(predict, tiles, batch), 4)
            row["predictor_mpx_s"] = mpx_per_s(len(tiles), tile, row["predictor_s"])
            row.update(peak)
            if model is not None:
                row["model_s"] = round(time_model_forward(model, tiles, batch, device, dtype), 4)
                row["model_mpx_s"] = mpx_per_s(len(tiles), tile, row["model_s"])
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
            row["error"] = str(exc).splitlines()[0][:200]
            rows.append(row)
            break
        rows.append(row)
    return rows


def best_batch(rows: Sequence[dict[str, Any]], key: str = "predictor_mpx_s") -> dict[str, Any]:
    """The sweep row with the highest throughput (``key``); the smallest batch among equals."""
    usable = [r for r in rows if r.get(key)]
    if not usable:
        raise ValueError("no batch size ran: see the sweep's errors")
    return max(usable, key=lambda r: (r[key], -r["batch"]))


def verdicts(results: dict[str, Any]) -> dict[str, Any]:
    """Each bar of issue 15 with the measured value and whether it is met (None: not measured)."""
    out: dict[str, Any] = {}
    for name, run in results.get("agreement", {}).items():
        bar = AGREEMENT_BARS.get(run.get("precision", ""), AGREEMENT_BARS["float32"])
        value = run.get("agreement_percent")
        out[f"agreement_{name}"] = {"value": value, "bar": bar, "met": None if value is None else value >= bar}
    for name, run in results.get("throughput", {}).items():
        value = run.get("efficiency")
        out[f"efficiency_{name}"] = {"value": value, "bar": EFFICIENCY_TARGET,
                                     "met": None if value is None else value >= EFFICIENCY_TARGET}
    return out


def format_table(results: dict[str, Any]) -> str:
    """A short plain-text table of the figures (one line per precision / runtime)."""
    lines = [f"{'run':<18}{'agree %':>9}{'bar':>7}{'best batch':>11}{'raw Mpx/s':>11}{'e2e Mpx/s':>11}"
             f"{'eff.':>7}{'model-only':>11}{'peak GPU MiB':>13}"]
    names = list(dict.fromkeys([*results.get("agreement", {}), *results.get("throughput", {})]))
    for name in names:
        agree = results.get("agreement", {}).get(name, {})
        run = results.get("throughput", {}).get(name, {})
        bar = AGREEMENT_BARS.get(agree.get("precision", ""), "")
        cells = [agree.get("agreement_percent"), bar, run.get("best_batch"), run.get("raw_mpx_s"),
                 run.get("e2e_mpx_s"), run.get("efficiency"), run.get("model_mpx_s"), run.get("peak_gpu_mib")]
        text = ["-" if c in (None, "") else (f"{c:.3f}" if isinstance(c, float) else str(c)) for c in cells]
        widths = (9, 7, 11, 11, 11, 7, 11, 13)
        lines.append(f"{name:<18}" + "".join(f"{t:>{w}}" for t, w in zip(text, widths, strict=True)))
    for key, verdict in verdicts(results).items():
        met = {True: "met", False: "NOT met", None: "not measured"}[verdict["met"]]
        lines.append(f"  {key}: {verdict['value']} (bar {verdict['bar']}): {met}")
    return "\n".join(lines)


def no_cuda_message(torch_module: Any) -> str:
    """Why the benchmark cannot run here, and what to do instead."""
    build = getattr(torch_module.version, "cuda", None)
    what = (f"this PyTorch ({torch_module.__version__}) is built for CUDA {build} but sees no CUDA device"
            if build else f"this PyTorch ({torch_module.__version__}) is a CPU-only build")
    return (f"bench-gpu: no CUDA GPU: {what}. Run it on a machine with an NVIDIA GPU and its driver "
            "(nvidia-smi lists it); `--device cpu` runs a quick CPU smoke test of the same steps, `--dry-run` "
            "only checks the inputs.")
