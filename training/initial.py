"""The weights a training starts from, and the network input they expect.

Three starting points besides random weights:

- the **encoder of a model package** (fine-tuning): its encoder, value scale and normalisation are used; its bands
  are matched with the chips' band names (:func:`training.adapt.plan_by_name`);
- a **weights file, whole network**: a safetensors file or a plain state dict of the same architecture;
- a **weights file, encoder only**: the encoder's tensors of such a file, or a file holding only an encoder.

Files are read by :mod:`models.weights` (the one weights reader): safetensors and plain state dicts always; a pickle
(a whole ``torch.save(model)``, or a checkpoint holding other Python objects) only when the user trusts the file.
Keys are matched with and without the ``encoder.`` prefix (and timm's ``model.``), so an encoder saved alone loads.
When the chips' bands differ from the weights', the first convolution is adapted (:mod:`training.adapt`). The log
says how many tensors were loaded, missing and of another shape; nothing matching is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models.errors import ModelPackageError
from ..models.sources import open_model
from ..models.spec import ModelPackage
from ..models.weights import read_state_dict, read_weights_file
from .adapt import BandPlan, adapt_first_conv, describe, first_conv, plan_by_name, plan_by_position
from .errors import TrainingDataError

PARTS = ("encoder", "network")
Info = Callable[[str], None]


@dataclass(frozen=True)
class StartingPoint:
    """Pretrained tensors and where they go: ``part`` "encoder" (encoder tensors only) or "network" (all)."""

    source: str
    """What the weights are called in messages (package name or file name)."""
    part: str
    state: Mapping[str, Any]
    package: ModelPackage | None = None
    plan: BandPlan | None = None
    """Chip bands matched with the package's by name; None for a weights file (matched by position)."""

    @property
    def attribution(self) -> str:
        """The package's attribution (kept in the trained package), or empty."""
        return self.package.attribution if self.package else ""


def from_package(path: str | Path, chip_bands: Sequence[str], framework: str = "smp") -> StartingPoint:
    """The encoder of the package at ``path`` (a segmentation package), or with ``framework`` "timm" the whole
    network of an image-classification package (a classifier head of another class count keeps its random start),
    its bands matched with the chips' band descriptions."""
    package = open_model(str(path))
    a = package.architecture
    if a.framework != framework or package.weights_format not in ("safetensors", "state_dict"):
        what = "segmentation-models-pytorch network" if framework == "smp" else "timm classifier"
        raise ModelPackageError(f"The package {package.name} is not a {what} with a state dict, so its weights cannot "
                                "start this training. Choose another package, or none.")
    plan = plan_by_name(package.bands, chip_bands, package.name)
    return StartingPoint(package.name, "encoder" if framework == "smp" else "network",
                         read_state_dict(package.weights_file, package.weights_format), package, plan)


def from_file(path: str | Path, part: str, trusted: bool) -> StartingPoint:
    """A weights file's tensors for the whole network or its encoder (``part``); pickles only when ``trusted``."""
    if part not in PARTS:
        raise TrainingDataError(f"Unknown part {part!r} of the network to start from: choose one of "
                                f"{', '.join(PARTS)}.")
    return StartingPoint(Path(path).name, part, read_weights_file(path, trusted))


def _candidates(key: str) -> list[str]:
    """The names ``key`` of our network may have in a weights file: as is, without ``encoder.``, and without
    ``encoder.model.`` (a timm model's own checkpoint for a ``tu-`` encoder)."""
    names = [key]
    if key.startswith("encoder."):
        names.append(key[len("encoder."):])
        if key.startswith("encoder.model."):
            names.append(key[len("encoder.model."):])
    return names


def _show(keys: Sequence[str], limit: int = 3) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _first_layer(net, start: StartingPoint, chip_bands: Sequence[str], in_channels: int) -> tuple[str, BandPlan] | None:
    """The key of the first convolution and the band plan when its input must be adapted; None when not."""
    found = first_conv(net, in_channels)
    plan = start.plan
    if found is None:
        if plan is not None and not plan.unchanged:
            raise TrainingDataError(f"The chips' bands differ from those of {start.source}, but the first convolution "
                                    "of this encoder cannot be found to adapt it. Export the chips with the bands of "
                                    f"{start.source} ({', '.join(plan.pretrained_bands)}), or train without initial "
                                    "weights.")
        return None
    key, module = found
    tensor = next((start.state[n] for n in _candidates(key) if n in start.state), None)
    if tensor is None or tensor.ndim != 4 or tuple(tensor.shape[2:]) != tuple(module.weight.shape[2:]) \
            or tensor.shape[0] != module.weight.shape[0]:
        return None  # not this layer's weights: counted as missing or mismatched below
    if plan is None:
        plan = plan_by_position(int(tensor.shape[1]), chip_bands)
    elif len(plan.pretrained_bands) != tensor.shape[1]:
        raise TrainingDataError(f"{start.source} names {len(plan.pretrained_bands)} bands but its first convolution "
                                f"{key} takes {tensor.shape[1]}: the package is inconsistent.")
    if plan.unchanged:
        return None
    if module.groups != 1:
        raise TrainingDataError(f"The first convolution {key} of this encoder is grouped ({module.groups} groups): its "
                                "input bands cannot be adapted. Export the chips with the bands of "
                                f"{start.source}, or train without initial weights.")
    return key, plan


def load_start(net, start: StartingPoint, chip_bands: Sequence[str], in_channels: int, init: str,
               info: Info, warning: Info) -> dict[str, int]:
    """Load ``start`` into ``net`` (the encoder or every tensor, by name), adapting the first convolution to the
    chips' bands; log what was loaded. Returns the counts (loaded, adapted, missing, mismatched, unused)."""
    own = net.state_dict()
    wanted = [k for k in own if not k.endswith("num_batches_tracked")
              and (start.part == "network" or k.startswith("encoder."))]
    adapt = _first_layer(net, start, chip_bands, in_channels)
    loaded: dict[str, Any] = {}
    missing, mismatched, used = [], [], set()
    for key in wanted:
        name = next((n for n in _candidates(key) if n in start.state), None)
        if name is None:
            missing.append(key)
            continue
        used.add(name)
        tensor = start.state[name]
        if adapt and key == adapt[0]:
            tensor = adapt_first_conv(tensor, adapt[1], init)
        if tuple(tensor.shape) != tuple(own[key].shape):
            mismatched.append(f"{key} {tuple(tensor.shape)} vs {tuple(own[key].shape)}")
            continue
        loaded[key] = tensor.to(own[key].dtype)
    what = "encoder" if start.part == "encoder" else "network"
    if not loaded:
        sample = _show(sorted(start.state))
        raise TrainingDataError(
            f"None of the {len(wanted)} {what} tensors of this network was found in {start.source} with its shape "
            f"({len(start.state)} tensors, e.g. {sample}). The weights belong to another architecture or encoder: "
            "choose the encoder they were trained with, or the part they hold (whole network or encoder only).")
    net.load_state_dict(loaded, strict=False)
    unused = sum(1 for n in start.state if n not in used and not n.endswith("num_batches_tracked"))
    if adapt:
        for line in describe(adapt[1], init, adapt[0]):
            info(line)
    info(f"Initial weights from {start.source} ({'encoder only' if start.part == 'encoder' else 'whole network'}): "
         f"{len(loaded)} of {len(wanted)} {what} tensors loaded ({1 if adapt else 0} adapted to the chips' bands), "
         f"{len(missing)} missing, {len(mismatched)} of another shape; {unused} tensors of the file not used.")
    if missing or mismatched:
        warning("Tensors keeping their random start: "
                + "; ".join(t for t in (f"missing {_show(missing)}" if missing else "",
                                        f"another shape {_show(mismatched)}" if mismatched else "") if t) + ".")
    return {"loaded": len(loaded), "adapted": 1 if adapt else 0, "missing": len(missing),
            "mismatched": len(mismatched), "unused": unused}


def input_statistics(start: StartingPoint | None, chip_stats: Callable[[], tuple[list[float], list[float]]],
                     n_bands: int) -> tuple[float, float, list[float], list[float]]:
    """(value scale, offset, per-band mean, per-band std in model units) of the network input.

    A package start keeps its scale, offset and normalisation for the bands it knows; the chips' statistics
    (``chip_stats()``, raster units: scaled into model units) serve the new bands and every other start."""
    package = start.package if start else None
    if package is None or start.plan is None:
        mean, std = chip_stats()
        return 1.0, 0.0, list(mean), list(std)
    shift, divisor = package.normalization.shift_and_divisor(len(package.bands))
    sources = start.plan.sources
    raw_mean, raw_std = chip_stats() if None in sources else ([0.0] * n_bands, [1.0] * n_bands)
    scale, offset = package.value_scale, package.value_offset
    mean = [shift[s] if s is not None else raw_mean[j] * scale + offset for j, s in enumerate(sources)]
    std = [divisor[s] if s is not None else raw_std[j] * abs(scale) for j, s in enumerate(sources)]
    return scale, offset, mean, std
