"""A package's network exported to ONNX once, checked against PyTorch, and cached for ONNX Runtime.

The export is keyed by the package's weights checksum (and the architecture and exporter settings), so a changed
package is exported afresh and an unchanged one never twice. It is written into the user's cache
(``$XDG_CACHE_HOME/deepraster/onnx``, default ``~/.cache/deepraster/onnx``), shared by every copy of the package
and never zipped into a ``.drpk`` made from the package folder; only where that cache cannot be written does it go
beside the package (``.onnx/`` in the package folder), and never into a folder that cannot be written (a read-only
install, a shared drive). An export shipped in the package's ``.onnx/`` is found first. Files are written under a
temporary name and renamed only after the numerical check passed, so a half-written or wrong export is never found.

Finding a cached export (:func:`cached_onnx`) imports neither torch nor onnx: the ONNX Runtime path of a run that
finds its export starts without PyTorch.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..tiling.checksums import sha256_of
from ..tiling.errors import DeepRasterError
from ..tiling.onnx_predictor import OnnxPredictor, activate
from .cache import ONNX_ENTRY, cache_home, mark_used, prune
from .onnx_optimized import forget_optimized_graphs
from .spec import ModelPackage

OPSET = 17
"""ONNX opset of the export (ONNX Runtime ≥ 1.14 runs it)."""
EXPORT_VERSION = 1
"""Bumped when the way of exporting changes, so older cached exports are not used."""
MIN_AGREEMENT = 0.999
"""Least share of pixels whose class (argmax, or p ≥ 0.5 for one sigmoid channel) ONNX and PyTorch must agree on."""
CHECK_TILE = 256
"""Side in pixels of the random tile the export is checked on (rounded up to the package's size divisor)."""
FOLDER_NAME = ".onnx"
"""Folder inside the package that holds its exports."""

Info = Callable[[str], None]


@dataclass(frozen=True)
class ExportCheck:
    """How the exported network agrees with PyTorch: class agreement (0–1) and max |Δp| (activation units)."""

    agreement: float
    max_abs_diff: float
    pixels: int


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/deepraster/onnx`` (``~/.cache/deepraster/onnx`` when the variable is unset)."""
    return cache_home() / "onnx"


def export_key(package: ModelPackage) -> str:
    """24 hex digits naming the export: weights checksum (computed when the package has none), architecture,
    opset and :data:`EXPORT_VERSION`."""
    weights = package.weights_sha256 or sha256_of(package.weights_file)
    arch = package.architecture
    described = json.dumps([weights, arch.framework, arch.arch, arch.encoder, arch.in_channels, arch.out_channels,
                            sorted((str(k), str(v)) for k, v in dict(arch.kwargs).items()), OPSET, EXPORT_VERSION])
    return hashlib.sha256(described.encode()).hexdigest()[:24]


def candidate_paths(package: ModelPackage) -> list[Path]:
    """Where the export may lie, in the order looked at: beside the package (shipped), then the user's cache."""
    name = f"{package.name}-{export_key(package)}.onnx".replace(os.sep, "_")
    return [package.folder / FOLDER_NAME / name, user_cache_dir() / name]


def cached_onnx(package: ModelPackage) -> Path | None:
    """The package's checked export when one exists, else None (no torch, no onnx imported); marked as used."""
    path = next((path for path in candidate_paths(package) if path.is_file()), None)
    if path is not None and path.parent == user_cache_dir():
        mark_used(path)
    return path


def ensure_onnx(package: ModelPackage, trusted: bool = False, sample: np.ndarray | None = None,
                info: Info = lambda message: None) -> Path:
    """The package's ONNX export: the cached one, or a new export (see :func:`export_onnx`)."""
    return cached_onnx(package) or export_onnx(package, trusted, sample, info)


def export_onnx(package: ModelPackage, trusted: bool = False, sample: np.ndarray | None = None,
                info: Info = lambda message: None) -> Path:
    """Export the package's network to ONNX (dynamic batch, height and width), check it against PyTorch on a random
    tile and on ``sample`` (one real normalised tile, ``(bands, H, W)`` float32, when given) and publish it in the
    user's cache or, where that cannot be written, beside the package. Raises :class:`DeepRasterError` when the
    export disagrees with PyTorch or cannot be written anywhere."""
    from .loaders import load_model  # torch: only when exporting

    model = load_model(package, trusted=trusted)
    errors = []
    for target in reversed(candidate_paths(package)):  # the user's cache first
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".part", dir=target.parent)
        except OSError as exc:  # read-only package folder, no home: try the next place
            errors.append(f"{target.parent}: {exc.strerror or exc}")
            continue
        os.close(handle)
        try:
            try:
                _export(model, Path(temp), package.architecture.in_channels, package.size_divisor)
            except Exception as exc:  # noqa: BLE001 (the exporter raises anything for an unsupported operator)
                raise DeepRasterError(f"PyTorch cannot export {package.name} to ONNX ({type(exc).__name__}: "
                                      f"{str(exc)[:300]}). Run this package with runtime 'torch'.") from exc
            check = check_export(model, Path(temp), package, sample)
            info(f"ONNX export of {package.name} checked against PyTorch on {check.pixels} px: class agreement "
                 f"{100 * check.agreement:.3f} %, max |Δp| {check.max_abs_diff:.2e}.")
            if check.agreement < MIN_AGREEMENT:
                raise DeepRasterError(
                    f"The ONNX export of {package.name} agrees with PyTorch on only {100 * check.agreement:.2f} % of "
                    f"pixels (at least {100 * MIN_AGREEMENT:.1f} % needed). Run this package with runtime 'torch'.")
            os.chmod(temp, 0o644)  # mkstemp makes it private; an export is no secret
            os.replace(temp, target)
            forget_optimized_graphs(target, user_cache_dir())  # made from an earlier file at this path
            info(f"ONNX export cached at {target}.")
            if target.parent == user_cache_dir():
                prune(target.parent, keep=target, entry_name=ONNX_ENTRY, info=info)
            return target
        finally:
            Path(temp).unlink(missing_ok=True)
    raise DeepRasterError("Nowhere to write the ONNX export of this package (" + "; ".join(errors) + "). Make the "
                          "package folder or $XDG_CACHE_HOME writable, or run with runtime 'torch'.")


def _export(model, path: Path, channels: int, divisor: int) -> None:
    """``torch.onnx.export`` with the TorchScript-based exporter (no onnxscript needed) and dynamic axes."""
    import warnings

    import torch

    side = _round_up(CHECK_TILE, divisor)
    dummy = torch.zeros(1, channels, side, side)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter warns about its own deprecation and traced shapes
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=OPSET, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": axes, "output": axes})


def check_export(model, path: Path, package: ModelPackage, sample: np.ndarray | None = None,
                 seed: int = 0) -> ExportCheck:
    """Compare PyTorch and ONNX Runtime after the package's activation on a random tile (and ``sample``)."""
    import torch

    side = _round_up(CHECK_TILE, package.size_divisor)
    rng = np.random.default_rng(seed)
    tiles = [rng.standard_normal((package.architecture.in_channels, side, side), dtype=np.float32)]
    if sample is not None:
        tiles.append(np.ascontiguousarray(sample, dtype=np.float32))
    onnx = OnnxPredictor(path, ["CPUExecutionProvider"], package.activation)
    agree = pixels = 0
    worst = 0.0
    for tile in tiles:
        batch = tile[None]
        with torch.inference_mode():
            expected = activate(model(torch.from_numpy(batch)).float().numpy(), package.activation)
        got = onnx(batch)
        worst = max(worst, float(np.abs(got - expected).max()))
        same = classes_of(got) == classes_of(expected)
        agree += int(same.sum())
        pixels += same.size
    return ExportCheck(agree / pixels, worst, pixels)


def classes_of(probabilities: np.ndarray) -> np.ndarray:
    """Class index per pixel of ``(N, K, H, W)`` activations (p ≥ 0.5 for a single channel)."""
    if probabilities.shape[1] == 1:
        return probabilities[:, 0] >= 0.5
    return probabilities.argmax(axis=1)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // max(1, multiple)) * max(1, multiple)
