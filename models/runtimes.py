"""Choosing the runtime a pixel-classification run computes on: PyTorch or ONNX Runtime.

``auto`` takes ONNX Runtime when it is installed (measured 2–3× faster per tile on the CPU than PyTorch eager for
the ukis-csmask U-Net, and without the torch import at start-up; see README "Runtimes"), else PyTorch. A package
whose export fails or disagrees with PyTorch runs on PyTorch under ``auto``, with a warning; under ``onnxruntime``
the run stops with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from osgeo import gdal

from ..tiling.errors import DeepRasterError
from ..tiling.grid import TileGrid
from ..tiling.onnx_predictor import cpu_cores, onnxruntime_available
from ..tiling.reader import InputTransform, StripReader
from ..tiling.source import RasterSource
from ..tiling.window import Window
from .inputs import available_memory, check_tile_memory
from .spec import ModelPackage

RUNTIMES = ("auto", "torch", "onnxruntime")
"""The runtime names a request may give."""

Message = Callable[[str], None]


def choose_runtime(name: str) -> str:
    """``torch`` or ``onnxruntime`` for a requested name; ``auto`` → onnxruntime when importable, else torch."""
    name = (name or "auto").lower()
    if name not in RUNTIMES:
        raise DeepRasterError(f"Unknown runtime {name!r}: choose one of {', '.join(RUNTIMES)}.")
    if name == "auto":
        return "onnxruntime" if onnxruntime_available() else "torch"
    if name == "onnxruntime" and not onnxruntime_available():
        raise DeepRasterError("Runtime 'onnxruntime' was chosen but the onnxruntime package is not installed: "
                              "install it (Deep Raster's installer, or pip install onnxruntime) or choose 'torch'.")
    return name


def resolve_runtime(package: ModelPackage, runtime: str, *, trusted: bool = False,
                    sample: Callable[[], np.ndarray] | None = None, info: Message = lambda m: None,
                    warning: Message = lambda m: None) -> str:
    """``torch`` or ``onnxruntime``: the runtime a run of ``package`` computes on (see :func:`onnx_file`)."""
    return "torch" if onnx_file(package, runtime, trusted, sample, info, warning) is None else "onnxruntime"


def onnx_file(package: ModelPackage, runtime: str, trusted: bool = False,
              sample: Callable[[], np.ndarray] | None = None, info: Message = lambda m: None,
              warning: Message = lambda m: None) -> Path | None:
    """The checked ONNX export a run of ``package`` uses, or None when it runs on PyTorch. The export is made (and
    checked on ``sample``, one real normalised tile) here when it is not cached yet; under ``auto`` an export that
    fails or disagrees with PyTorch means PyTorch, with a warning."""
    if choose_runtime(runtime) != "onnxruntime":
        return None
    from .onnx_export import cached_onnx, export_onnx

    try:  # the sample tile is read only when there is an export to check
        return cached_onnx(package) or export_onnx(package, trusted, sample() if sample else None, info)
    except DeepRasterError as exc:
        if runtime != "auto":
            raise
        warning(f"{exc} Running on PyTorch instead.")
        return None


def make_predictor(package: ModelPackage, runtime: str, device: str, *, tile: int, batch_size: int,
                   half: bool = False, trusted: bool = False, sample: Callable[[], np.ndarray] | None = None,
                   info: Message = lambda m: None, warning: Message = lambda m: None,
                   threads: int | None = None, early: Any = None) -> tuple[Any, str]:
    """The predictor for a run and a phrase saying where it runs (for the log). ``sample`` gives one real
    normalised tile to check a new ONNX export on; ``threads``: CPU threads of ONNX Runtime (default: every core
    this process may use); ``early``: what :func:`early_onnx_predictor` started for this run, taken when it fits."""
    made = None
    try:
        path = onnx_file(package, runtime, trusted, sample, info, warning)
        if path is not None:
            made = _onnx_predictor(path, package, device, tile, batch_size, half, info, threads, early)
        else:
            made = _torch_predictor(package, device, tile, batch_size, half, trusted)
        return made
    finally:
        if early is not None and (made is None or made[0] is not early):
            early.settle()  # not taken: its session thread must not outlive the run


def early_onnx_predictor(package: ModelPackage, runtime: str, device: str, batch_size: int,
                         threads: int | None = None) -> Any:
    """The ONNX Runtime predictor of a run started before the run's checks, so that its session is made while the
    input is checked; None unless the run will surely take ONNX Runtime with an export already cached. Hand it to
    :func:`make_predictor` (``early``), which takes it after its own checks."""
    from ..tiling.onnx_predictor import resolve_providers
    from .onnx_export import cached_onnx

    try:
        if choose_runtime(runtime) != "onnxruntime" or (path := cached_onnx(package)) is None:
            return None
        providers = resolve_providers(device)
    except DeepRasterError:
        return None  # said by the run's own checks
    return _new_onnx_predictor(path, providers, package, threads or cpu_cores(), batch_size)


def _new_onnx_predictor(path: Path, providers: list[str], package: ModelPackage, threads: int, batch_size: int):
    from ..tiling.onnx_predictor import OnnxPredictor
    from .onnx_export import user_cache_dir
    from .onnx_optimized import optimized_graph_path

    def optimized() -> Path | None:  # on the session's thread: the CPU signature imports onnxruntime
        return optimized_graph_path(Path(path), user_cache_dir())

    return OnnxPredictor(path, providers, package.activation, threads, batch_size, optimized)


def _onnx_predictor(path, package: ModelPackage, device: str, tile: int, batch_size: int, half: bool,
                    info: Message, threads: int | None = None, early: Any = None) -> tuple[Any, str]:
    from ..tiling.onnx_predictor import cpu_streams, resolve_providers

    providers = resolve_providers(device)
    on_gpu = providers[0] == "CUDAExecutionProvider"
    threads = threads or cpu_cores()
    check_tile_memory(tile, batch_size, "cuda" if on_gpu else "cpu", package.size_divisor,
                      None if on_gpu else available_memory("cpu"), cpu_streams(threads, batch_size)[0])
    if half:
        info("Half precision applies to PyTorch on a GPU only; ONNX Runtime runs in float32.")
    if early is not None and early.made_as == (Path(path), providers, threads, batch_size):
        predictor = early
    else:
        predictor = _new_onnx_predictor(Path(path), providers, package, threads, batch_size)
    where = "CUDA GPU" if on_gpu else f"CPU, {threads} threads" + (
        f": {predictor.streams} tiles at once" if predictor.streams > 1 else "")
    return predictor, f"ONNX Runtime ({where})"


def _torch_predictor(package: ModelPackage, device: str, tile: int, batch_size: int, half: bool,
                     trusted: bool) -> tuple[Any, str]:
    from ..tiling.predictor import TorchPredictor, resolve_device  # torch imported only here
    from .loaders import load_model

    torch_device = resolve_device(device)
    check_tile_memory(tile, batch_size, torch_device.type, package.size_divisor, available_memory(torch_device.type))
    predictor = TorchPredictor(load_model(package, trusted=trusted), torch_device, package.activation, half)
    return predictor, f"PyTorch on {torch_device}"


def sample_tile(source: RasterSource, region: Window, tile: int, transform: InputTransform) -> np.ndarray:
    """One normalised ``(bands, tile, tile)`` tile from the middle of ``region`` (to check an export on)."""
    grid = TileGrid(region, tile, 0)
    strip = StripReader(source, grid, transform).read_strip(gdal.Open(source.path, gdal.GA_ReadOnly),
                                                            len(grid.row_starts) // 2)
    middle = grid.row(len(grid.row_starts) // 2)[grid.shape[1] // 2].window
    start = middle.col_off - strip.window.col_off
    return np.ascontiguousarray(strip.data[:, :tile, start:start + tile])


def coverage_factor(grid: TileGrid) -> float:
    """Pixels the model computes ÷ pixels of the output: tiles × tile² over the region's area (≥ 1)."""
    region = grid.region
    return len(grid) * grid.tile_size ** 2 / max(1, region.width * region.height)
