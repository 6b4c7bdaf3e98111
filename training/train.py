"""Training a segmentation model from a folder of chips into a model package: the core behind "Train segmentation
model" (``train_segmentation``).

Start to end: the chips are read back (:func:`training.chips.read_chip_folder`, ours or Esri's Classified_Tiles),
checked and split (:mod:`training.dataset`); a segmentation-models-pytorch network is built, from scratch or with the
encoder of an existing package (:mod:`training.network`); every epoch trains on the training chips (flips and 90°
rotations drawn from the seed), is measured on the validation chips (:mod:`training.loop`) and checkpointed
(:mod:`training.checkpoint`), so a killed run started again with the same parameters resumes, and on the CPU ends
with the same weights. The best epoch by validation mIoU becomes the package (:mod:`training.packaging`); a cancel
keeps the best epoch so far. Early stopping ends the run after ``patience`` epochs without a better mIoU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..tiling.callbacks import Callbacks
from .adapt import NEW_BAND_INITS
from .checkpoint import run_key, work_folder
from .chips import ChipFolder, read_chip_folder
from .dataset import (
    ChipDataset,
    InputTransform,
    PreparedChips,
    chip_statistics,
    class_lookup,
    prepare_chips,
)
from .epochs import SupervisedRun
from .errors import TrainingDataError
from .initial import PARTS, StartingPoint, from_file, from_package, input_statistics
from .loop import deterministic
from .network import architecture, build, make_loss
from .packaging import write_outputs
from .run_checks import InitialWeights, RunRequest, check_run_request
from .run_result import RunResult


@dataclass(kw_only=True)
class TrainRequest(InitialWeights, RunRequest):
    """What to train, from which chips, into which package (see :func:`train_segmentation`); the package's
    encoder starts the training when ``initial_package`` is given."""

    chips: Path
    arch: str = "Unet"
    encoder: str = "resnet18"
    loss: str = "ce"
    class_weighting: bool = False
    """Weight the cross-entropy by inverse class frequency (training pixel counts)."""


class TrainResult(RunResult):
    """What the segmentation run wrote and how it went."""


def _check(request: TrainRequest) -> None:
    check_run_request(request, {"Epochs": request.epochs, "batch size": request.batch_size}, "0.001")
    check_initial(request)


def check_initial(request) -> None:
    """Refuse both a package and a weights file as initial weights, an unknown new-band start or network part."""
    if request.initial_package and request.initial_weights:
        raise TrainingDataError("Give either a model package or a weights file as initial weights, not both.")
    if request.new_bands not in NEW_BAND_INITS or request.initial_part not in PARTS:
        raise TrainingDataError(f"New bands start as one of {', '.join(NEW_BAND_INITS)}; a weights file starts one "
                                f"of {', '.join(PARTS)}.")


def starting_point(request, folder, n_bands: int, framework: str = "smp") -> StartingPoint | None:
    """The starting weights the request names (None: random); ``folder``'s band names match the bands of a package
    of ``framework`` (:func:`training.initial.from_package`)."""
    if request.initial_package:
        return from_package(request.initial_package, chip_band_names(folder, n_bands), framework)
    if request.initial_weights:
        return from_file(request.initial_weights, request.initial_part, request.trust_weights)
    return None


def chip_band_names(folder, n_bands: int) -> list[str]:
    """The folder's band names, or empty names when it records none (or not one per band)."""
    return list(folder.bands) if len(folder.bands) == n_bands else [""] * n_bands


def chip_transform(folder, data, start: StartingPoint | None, callbacks: Callbacks) -> InputTransform:
    """Model input from chip values (chip band order): the starting package's scale and normalisation for the bands
    it knows, else the training statistics (the manifest's, Esri's band statistics, or computed from the training
    chips)."""

    def chip_stats() -> tuple[list[float], list[float]]:
        mean, std = folder.mean, folder.std
        if not mean or not std or len(mean) != data.band_count or len(std) != data.band_count:
            callbacks.info("The folder records no band statistics: computing them from the training chips.")
            mean, std = chip_statistics(data.train)
        return list(mean), list(std)

    scale, offset, mean, std = input_statistics(start, chip_stats, data.band_count)
    return InputTransform(tuple(range(data.band_count)), scale, offset, tuple(mean), tuple(std))


def _key_parameters(request: TrainRequest, arch, transform: InputTransform) -> dict[str, Any]:
    return {"chips": str(Path(request.chips).resolve()), "arch": arch.arch, "encoder": arch.encoder,
            "initial": str(request.initial_package or request.initial_weights or ""),
            "initial_part": request.initial_part if request.initial_weights else "", "new_bands": request.new_bands,
            "trusted": request.trust_weights, "loss": request.loss, "weighted": request.class_weighting,
            "epochs": request.epochs, "batch": request.batch_size, "lr": request.learning_rate,
            "wd": request.weight_decay, "schedule": request.schedule, "patience": request.patience,
            "seed": request.seed, "fraction": request.validation_fraction, "mean": transform.mean}


def _initial_text(request: TrainRequest) -> str:
    if request.initial_package:
        return f"encoder of the package {request.initial_package}"
    if request.initial_weights:
        return f"{'whole network' if request.initial_part == 'network' else 'encoder'} from {request.initial_weights}"
    return "none"


def parameters_of(request: TrainRequest, arch) -> dict[str, Any]:
    """The parameters as the package's provenance and the report record them."""
    return {"architecture": arch.arch, "encoder": arch.encoder,
            "initial_weights": _initial_text(request), "new_bands": request.new_bands,
            "loss": request.loss, "class_weighting": request.class_weighting, "epochs": request.epochs,
            "batch_size": request.batch_size, "learning_rate": request.learning_rate,
            "weight_decay": request.weight_decay, "optimizer": "AdamW", "schedule": request.schedule,
            "patience": request.patience, "seed": request.seed, "augmentation": "flips, 90° rotations"}


def train_segmentation(request: TrainRequest, callbacks: Callbacks | None = None) -> TrainResult:
    """Train, then write the package and the report (see the module docstring)."""
    cb = callbacks or Callbacks()
    _check(request)
    cb.stage("Checking the chips")
    folder = read_chip_folder(request.chips)
    data = prepare_chips(folder, request.validation_fraction, request.seed)
    split = "drawn at random by chip" if data.drawn_split else "spatial blocks (from the export)"
    cb.info(f"{len(data.train)} training and {len(data.validation)} validation chips of {data.chip_size} px, "
            f"{data.band_count} band(s), {len(folder.classes)} classes; split: {split}"
            + (f" (seed {request.seed}, fraction {request.validation_fraction})." if data.drawn_split else "."))
    start = starting_point(request, folder, data.band_count)
    transform = chip_transform(folder, data, start, cb)
    encoder = start.package.architecture.encoder if start and start.package else request.encoder
    if start and start.package and encoder != request.encoder:
        cb.info(f"Encoder {encoder}, as in {start.package.name} (its weights start the training).")
    arch = architecture(request.arch, encoder, data.band_count, len(folder.classes))
    work = work_folder(Path(request.output), run_key(_key_parameters(request, arch, transform)))
    from ..tiling.predictor import resolve_device

    device = resolve_device(request.device)
    with deterministic(device.type == "cpu"):
        run = _Run(request, folder, data, transform, arch, start, device, work, cb)
        del start  # its tensors are in the network now: no second copy through the epochs
        run.train_to_end()
    return write_outputs(run, parameters_of(request, arch))


class _Run(SupervisedRun):
    """The state of one segmentation training run, epoch by epoch (the loop: :class:`training.epochs.EpochRun`)."""

    best_key = "miou"

    def __init__(self, request: TrainRequest, folder: ChipFolder, data: PreparedChips, transform: InputTransform,
                 arch, start: StartingPoint | None, device, work: Path, callbacks: Callbacks) -> None:
        super().__init__(request, device, work, callbacks)
        self.folder, self.data, self.transform, self.arch = folder, data, transform, arch
        self.values = [int(c["value"]) for c in folder.classes]
        self.names = [str(c["name"]) for c in folder.classes]
        self.net = build(arch, start, chip_band_names(folder, data.band_count), request.new_bands, callbacks.info,
                         callbacks.warning).to(device)
        self.start = replace(start, state={}) if start else None  # the tensors are in the network now
        stride = int(getattr(self.net.encoder, "output_stride", 32) or 1)
        if data.chip_size % stride:
            size = max(stride, data.chip_size // stride * stride)
            raise TrainingDataError(f"The chips are {data.chip_size} px but {arch.arch} with {arch.encoder} needs a "
                                    f"multiple of {stride} px. Export chips of {size} px, or choose another "
                                    "architecture.")
        lut = class_lookup(self.values)
        self.setup(data, ChipDataset(data.train, transform, lut, True, request.seed),
                   ChipDataset(data.validation, transform, lut, False, request.seed),
                   lambda weights: make_loss(request.loss, weights))

    def entry(self, loss: float, val_loss: float | None, scores: dict[str, Any]) -> dict[str, Any]:
        return {"validation_loss": val_loss, "validation_miou": scores["miou"] if scores["miou"] is not None else 0.0,
                "validation_overall_accuracy": scores["overall_accuracy"],
                "validation_iou": [c["iou"] for c in scores["per_class"]]}
