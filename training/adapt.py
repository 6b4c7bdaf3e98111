"""Input-channel adaptation: pretrained first-layer filters fitted to the chips' bands.

A network starting from pretrained weights (a package's encoder, a weights file) needs one filter per input band in
its first convolution. When the chips' bands differ from the bands the weights were trained on, the first
convolution is rebuilt band by band (:class:`BandPlan`):

- a chip band the weights know (by name when the package names its bands, by position for a plain weights file)
  keeps its pretrained filters;
- a chip band they lack gets the mean of the pretrained filters (``"mean"``) or zeros (``"zero"``);
- pretrained bands the chips lack are dropped.

With ``"mean"`` every filter is then multiplied by (pretrained bands ÷ chip bands), the rule of timm's
``adapt_input_conv`` (which repeats RGB filters over the bands and scales them by 3 / bands): the first layer's
response to an input whose bands move together keeps its magnitude. With ``"zero"`` nothing is scaled: the kept
bands respond exactly as in the pretrained network and a new band starts silent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..models.errors import BandMappingError
from ..models.spec import BandSpec

NEW_BAND_INITS = ("mean", "zero")


@dataclass(frozen=True)
class BandPlan:
    """Which pretrained input channel each chip band (network input, chip order) takes its filters from."""

    chip_bands: tuple[str, ...]
    pretrained_bands: tuple[str, ...]
    """Names of the pretrained input channels (``channel 1`` … when the weights name none)."""
    sources: tuple[int | None, ...]
    """Per chip band: the 0-based pretrained channel, or None for a band the weights lack."""
    by_name: bool

    @property
    def dropped(self) -> tuple[int, ...]:
        """Pretrained channels no chip band uses."""
        used = set(self.sources)
        return tuple(i for i in range(len(self.pretrained_bands)) if i not in used)

    @property
    def unchanged(self) -> bool:
        """True when the chips feed the pretrained channels as they are (nothing to adapt)."""
        return self.sources == tuple(range(len(self.pretrained_bands)))


def plan_by_name(pretrained: Sequence[BandSpec], chip_bands: Sequence[str], source: str) -> BandPlan:
    """Chip bands matched with a package's bands by name or alias (each pretrained band used once); refused when the
    chips carry no band names or share no band with the package (then nothing of its first layer would be kept)."""
    names = ", ".join(b.name for b in pretrained)
    if not chip_bands or not all(chip_bands):
        raise BandMappingError(f"The chips carry no band names, so they cannot be matched with the bands of {source} "
                               f"({names}). Export the chips from a raster with band descriptions.")
    taken: set[int] = set()
    sources: list[int | None] = []
    for description in chip_bands:
        match = next((i for i, b in enumerate(pretrained) if i not in taken and b.matches(description)), None)
        if match is not None:
            taken.add(match)
        sources.append(match)
    if not taken:
        missing = "; ".join(f"{b.name} ({', '.join(b.aliases)})" if b.aliases else b.name for b in pretrained)
        raise BandMappingError(
            f"The chips' bands ({', '.join(chip_bands)}) share no band with {source}, whose encoder was trained on "
            f"{len(pretrained)} bands ({names}). Not found: {missing}. Export the chips from a raster whose band "
            "descriptions name these bands (B02, B03 …), start from a weights file (bands matched by position), or "
            "train without initial weights.")
    return BandPlan(tuple(chip_bands), tuple(b.name for b in pretrained), tuple(sources), True)


def plan_by_position(channels: int, chip_bands: Sequence[str]) -> BandPlan:
    """Chip band i takes pretrained channel i (weights files name no bands); extra chip bands are new, extra
    pretrained channels are dropped."""
    return BandPlan(tuple(chip_bands), tuple(f"channel {i + 1}" for i in range(channels)),
                    tuple(i if i < channels else None for i in range(len(chip_bands))), False)


def adapt_first_conv(weight, plan: BandPlan, init: str):
    """The pretrained first-layer weight (out, pretrained bands, kh, kw) rebuilt for the chips' bands
    (out, chip bands, kh, kw) by ``plan``; ``init`` ("mean" or "zero") fills the bands the weights lack (see the
    module docstring). The result has the input's dtype."""
    import torch

    if init not in NEW_BAND_INITS:
        raise ValueError(f"Unknown initialisation {init!r} of new bands: choose one of {', '.join(NEW_BAND_INITS)}.")
    w = weight.detach().to(torch.float32)
    fill = w.mean(dim=1) if init == "mean" else torch.zeros_like(w[:, 0])
    adapted = torch.stack([w[:, s] if s is not None else fill for s in plan.sources], dim=1)
    if init == "mean":
        adapted = adapted * (w.shape[1] / len(plan.sources))
    return adapted.to(weight.dtype).contiguous()


def describe(plan: BandPlan, init: str, key: str) -> list[str]:
    """One log line per chip band (and one for the dropped pretrained bands): what its first-layer filters are."""
    n_old, n_new = len(plan.pretrained_bands), len(plan.sources)
    how = "by name" if plan.by_name else "by position (the weights name no bands)"
    scale = f", then every filter × {n_old}/{n_new} (timm's rule: the activation magnitude is kept)" \
        if init == "mean" and n_old != n_new else ""
    lines = [f"Input bands: the first convolution {key} is adapted from {n_old} to {n_new} bands, matched {how}"
             f"{scale}."]
    for name, source in zip(plan.chip_bands, plan.sources, strict=True):
        if source is not None:
            lines.append(f"  band {name or '(no name)'}: pretrained filters of {plan.pretrained_bands[source]}.")
        elif init == "mean":
            lines.append(f"  band {name or '(no name)'}: new, the mean of the {n_old} pretrained filters.")
        else:
            lines.append(f"  band {name or '(no name)'}: new, zero filters (starts silent).")
    if plan.dropped:
        lines.append("  dropped (not in the chips): " + ", ".join(plan.pretrained_bands[i] for i in plan.dropped)
                     + ".")
    return lines


def first_conv(net, in_channels: int) -> tuple[str, object] | None:
    """(state-dict key of the weight, module) of the encoder's first convolution: the first ``Conv2d`` of
    ``net.encoder`` taking ``in_channels`` inputs (where segmentation-models-pytorch patches the input bands too);
    None when there is none."""
    import torch

    encoder = getattr(net, "encoder", None)
    if encoder is None:
        return None
    for name, module in encoder.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.in_channels == in_channels:
            return f"encoder.{name}.weight", module
    return None
