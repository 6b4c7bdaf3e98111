"""Checkpoints of a training run, written after every epoch, so a killed run started again resumes.

A run keeps them in a hidden work folder beside its output, named after a key of everything that decides the
weights (data folder, architecture, loss, epochs, batch size, learning rate, schedule, seed ...): a run with the same
parameters finds and resumes it; other parameters start afresh. A checkpoint holds the network, optimiser,
scheduler and gradient-scaler states, the random states (torch, numpy, Python), the epochs done, the best epoch's
weights and score, and the metrics history. It is written under a temporary name and renamed, so a kill while
writing leaves the previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT = "checkpoint.pt"


def run_key(parameters: dict[str, Any]) -> str:
    """A short hash of the parameters that decide a run's weights."""
    text = json.dumps(parameters, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def work_folder(output: Path, key: str) -> Path:
    """The hidden folder beside ``output`` where the run with ``key`` keeps its checkpoint."""
    output = Path(output)
    return output.parent / f".{output.name}.training-{key}"


def random_states() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python random states, in types ``torch.load(weights_only=True)`` reads."""
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(np.asarray(keys, np.int64)), int(pos), int(has_gauss), float(cached)],
            "python": [version, list(state), gauss]}


def restore_random_states(states: dict[str, Any]) -> None:
    """Put back what :func:`random_states` saved."""
    import torch

    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))


def save_checkpoint(folder: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` as the folder's checkpoint (temporary name, then renamed)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / CHECKPOINT
    temp = folder / f".{CHECKPOINT}.partial"
    torch.save(state, temp)
    os.replace(temp, target)
    return target


def load_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The folder's checkpoint, or None when there is none (or it cannot be read: the run starts afresh)."""
    import torch

    path = folder / CHECKPOINT
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError):
        return None


def weights_digest(state_dict: dict[str, Any]) -> str:
    """SHA-256 of a state dict's tensors (names, dtypes, shapes and bytes): equal digests, equal weights."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
