"""The one reader of weights files, behind model packages and encoders alike.

- ``safetensors`` (preferred) holds tensors only: nothing runs when it is read;
- a state dict saved with ``torch.save`` (``.pt``, ``.pth``, ``.ckpt``) is read with ``torch.load(weights_only=True)``,
  which refuses to run code stored in the pickle;
- ``torchscript`` is a whole scripted model (``torch.jit.load``: TorchScript code, no Python pickle), recognised by
  :func:`is_torchscript`;
- a whole pickled module (what ``torch.save(model)`` writes) is a Python pickle that can run any code when opened: it
  is loaded only when the caller passes ``trusted=True`` (the user ticked "I trust this file").

Checkpoints are unwrapped by one set of rules, whichever tool reads them: up to :data:`MAX_NESTING` levels of nesting
under one of :data:`UNWRAP_KEYS`, entries that are not tensors dropped (epoch counters, optimiser settings), then
any prefix of :data:`KEY_PREFIXES` that every key shares, repeatedly (``module.model.conv1.weight`` →
``conv1.weight``). Every failure is a :class:`~deepraster.models.errors.WeightsError`.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import WeightsError

#: Keys under which checkpoints nest their state dict (Lightning, DINO's teacher, DataParallel wrappers, ...).
UNWRAP_KEYS = ("state_dict", "model", "model_state_dict", "teacher", "module")
#: Prefixes stripped when every key of the state dict starts with one of them.
KEY_PREFIXES = ("module.", "model.", "net.", "backbone.", "encoder.")
MAX_NESTING = 3

PICKLE_RISK = (
    "It is a whole pickled PyTorch model (what torch.save(model) writes). Opening a pickle runs whatever code it "
    "contains, so it is refused unless you trust its origin. If you do, tick the option to trust this file where the "
    "tool offers one; better, convert it once into a package with safetensors weights (\"Create model package\" does "
    "this)."
)


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def plain_error(exc: BaseException, limit: int = 300) -> str:
    """``exc`` as one plain text for a message: terminal colour codes (torch puts some in its errors) removed,
    at most ``limit`` characters."""
    return ANSI_ESCAPE.sub("", str(exc)).strip()[:limit]


def is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips with a ``code/`` folder; ``torch.save`` zips have none."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in f"/{n}" for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_state_dict(path: str | Path, fmt: str | None = None) -> dict[str, Any]:
    """The tensors of a safetensors file or a plain state dict, unwrapped (see the module's rules).

    Args:
        path: the weights file.
        fmt: ``"safetensors"`` or ``"state_dict"``; None: safetensors for a ``.safetensors`` file, else state dict.

    Never unpickles arbitrary objects: a whole pickled model raises :class:`WeightsError` with ``needs_trust``.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"The weights file {path} does not exist. Choose the file that holds the model's weights.")
    fmt = fmt or ("safetensors" if path.suffix.lower() == ".safetensors" else "state_dict")
    if fmt != "safetensors" and is_torchscript(path):
        raise WeightsError(f"{path} is a whole TorchScript model, not a state dict: it runs only as it is, in a "
                           "package whose weights format is 'torchscript'. Give a safetensors file or a state dict.")
    try:
        if fmt == "safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (safetensors, zipfile and the unpickler raise many types; all mean this)
        if "weights_only" in plain_error(exc, 10**6) or "Unsupported global" in plain_error(exc, 10**6):
            raise WeightsError(f"{path} is not a plain state dict. {PICKLE_RISK}", needs_trust=True) from exc
        raise WeightsError(
            f"Cannot read the weights file {path} ({type(exc).__name__}: {plain_error(exc)}). The file is corrupt, or "
            f"it is not a {fmt} file: give a safetensors file or a plain PyTorch state dict."
        ) from exc
    return unwrap_state_dict(state, path)


def read_weights_file(path: str | Path, trusted: bool = False) -> dict[str, Any]:
    """The tensors of any weights file a user may pick: safetensors or a plain state dict as
    :func:`read_state_dict` reads them; a pickle (a whole ``torch.save(model)``, or a checkpoint holding other Python
    objects) only with ``trusted=True``: then the module's state dict, or the checkpoint unwrapped by the same rules.
    Untrusted pickles raise :class:`WeightsError` with ``needs_trust``."""
    try:
        return read_state_dict(path)
    except WeightsError as exc:
        if not (exc.needs_trust and trusted):
            raise
    import torch

    try:
        content = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 (unpickling raises anything the pickle's code raises)
        raise WeightsError(f"Cannot load the pickled file {path} ({type(exc).__name__}: {plain_error(exc)}): it is "
                           "damaged or not a PyTorch file.") from exc
    if isinstance(content, torch.nn.Module):
        content = content.state_dict()
    return unwrap_state_dict(content, path)


def unwrap_state_dict(state: object, path: str | Path) -> dict[str, Any]:
    """The tensor mapping inside a checkpoint: nesting under :data:`UNWRAP_KEYS` removed, non-tensors dropped,
    shared :data:`KEY_PREFIXES` stripped. ``path`` names the file in messages."""
    import torch

    for _ in range(MAX_NESTING):
        if not isinstance(state, Mapping):
            break
        nested = next((state[k] for k in UNWRAP_KEYS if isinstance(state.get(k), Mapping)), None)
        if nested is None:
            break
        state = nested
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} does not hold a state dict (a mapping of parameter names to tensors).")
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{path} holds no tensors: it is not a weights file.")
    return strip_prefixes(tensors)


def strip_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` without the :data:`KEY_PREFIXES` that all its keys share, stripped until none is shared."""
    state = dict(state)
    changed = True
    while changed:
        changed = False
        for prefix in KEY_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def load_torchscript(path: Path):
    """A whole TorchScript model, on the CPU (TorchScript code, no Python pickle)."""
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 (TorchScript deserialisation raises RuntimeError and others)
        raise WeightsError(f"Cannot load the TorchScript model {path} ({plain_error(exc)}).") from exc


def load_pickled_module(path: Path, trusted: bool):
    """A whole pickled ``torch.nn.Module``; only with ``trusted=True`` (pickles run code when loaded)."""
    import torch

    if not trusted:
        raise WeightsError(f"{path} was not loaded. {PICKLE_RISK}", needs_trust=True)
    try:
        module = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 (unpickling raises anything the pickle's code raises)
        raise WeightsError(f"Cannot load the pickled model {path} ({type(exc).__name__}: {plain_error(exc)}): it "
                           "is damaged or not a PyTorch file. Choose the file torch.save wrote, a TorchScript "
                           "file or a safetensors file.") from exc
    if not isinstance(module, torch.nn.Module):
        raise WeightsError(f"{path} holds a {type(module).__name__}, not a PyTorch model (torch.nn.Module).")
    return module


def unchecked_weights_warning(name: str, weights_file: Path, sha256: str | None) -> str | None:
    """The warning for a package whose description records no checksum of its weights (None when it does):
    replaced or damaged weights would then run unnoticed."""
    if sha256:
        return None
    return (f"The package {name!r} records no checksum (sha256) of its weights {weights_file.name}: a damaged or "
            "replaced weights file cannot be detected. Use packages from a source you trust; re-create it with "
            "\"Create model package\" to record the checksum.")
