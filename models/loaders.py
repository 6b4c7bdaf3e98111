"""Turning a model package into a ready torch module, loading only safe weight formats.

Weights are read from safetensors, or from a plain state dict with ``torch.load(weights_only=True)``, which
refuses to run code stored in a pickle. The checksum in the package is verified before anything is read.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ModelPackageError
from .package import Architecture, ModelPackage, verify_weights


def build_network(arch: Architecture):
    """An untrained network of the described architecture (no download: encoder weights are not fetched)."""
    if arch.framework != "smp":
        raise ModelPackageError(f"Framework {arch.framework!r} is not supported; this version builds 'smp' models.")
    import segmentation_models_pytorch as smp

    try:
        return smp.create_model(arch=arch.arch, encoder_name=arch.encoder, encoder_weights=None,
                                in_channels=arch.in_channels, classes=arch.out_channels)
    except (KeyError, ValueError) as exc:
        raise ModelPackageError(
            f"segmentation-models-pytorch cannot build architecture {arch.arch!r} with encoder {arch.encoder!r} "
            f"({exc}). Check architecture.arch and architecture.encoder in the package."
        ) from exc


def read_state_dict(path: Path, fmt: str) -> dict:
    """Tensors from a safetensors file or a plain state dict; never unpickles arbitrary objects."""
    import torch

    try:
        if fmt == "safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (safetensors, zipfile and unpickler raise many types; all mean the same)
        raise ModelPackageError(
            f"Cannot read the weights file {path} ({type(exc).__name__}: {exc}). The file is corrupt, or it is not "
            f"a {fmt} file; a whole pickled model needs the package's trusted-file option."
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelPackageError(f"{path} does not hold a state dict (a mapping of parameter names to tensors).")
    return state


def load_model(package: ModelPackage, verify: bool = True):
    """The package's network with its weights loaded, in eval mode, on the CPU."""
    if verify:
        verify_weights(package)
    net = build_network(package.architecture)
    state = read_state_dict(package.weights_file, package.weights_format)
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = [k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong_shape:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

        details = "; ".join(text for text in (
            f"missing: {show(missing)}" if missing else "",
            f"unexpected: {show(unexpected)}" if unexpected else "",
            "wrong shape: " + show([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong_shape])
            if wrong_shape else "",
        ) if text)
        a = package.architecture
        raise ModelPackageError(
            f"The weights in {package.weights_file.name} do not fit {a.arch}/{a.encoder} with {a.in_channels} input "
            f"and {a.out_channels} output channels ({details}). The package describes another model than its weights."
        )
    net.load_state_dict(state, strict=True)
    return net.eval()
