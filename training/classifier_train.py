"""Training an object classifier from labelled tiles into an image-classification package: the core behind "Train
object classifier" (``train_object_classifier``).

Start to end: the folder is read back (:func:`training.tile_data.read_tile_folder`: our Labeled_Tiles export or
Esri's) and split (the export's spatial blocks, or drawn at random); a timm classifier is built by name
(:func:`models.loaders.build_network`, nothing downloaded), with random weights or those of a classification package
or a weights file (:mod:`training.initial`: the first convolution adapted to the chips' bands, a head of another
class count left random); every epoch trains on the training chips (flips and quarter turns drawn from the seed,
optionally a class-weighted cross-entropy), measures accuracy, balanced accuracy and the confusion matrix on the
validation chips and is checkpointed, so a killed run started again with the same parameters resumes
(:class:`training.epochs.SupervisedRun`). The best epoch by validation balanced accuracy becomes the package; a
cancel keeps the best epoch so far; early stopping ends the run after ``patience`` epochs without a better one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models.errors import ModelPackageError
from ..models.spec import Architecture
from ..tiling.callbacks import Callbacks
from .checkpoint import run_key, work_folder
from .epochs import SupervisedRun
from .errors import TrainingDataError
from .loop import deterministic
from .run_checks import InitialWeights, RunRequest, check_run_request
from .run_result import RunResult
from .split import TRAIN, VALIDATION
from .tile_data import PreparedTiles, TileDataset, TileFolder, prepare_tiles, read_tile_folder
from .train import check_initial, chip_band_names, chip_transform, starting_point

DEFAULT_CLASSIFIER = "resnet10t"
CLASSIFIERS = ("resnet10t", "resnet18", "resnet34", "resnet50", "efficientnet_b0", "mobilenetv3_large_100",
               "convnext_atto", "convnext_nano")
"""Suggested timm models (any timm model name is accepted)."""


@dataclass(kw_only=True)
class ClassifierTrainRequest(InitialWeights, RunRequest):
    """What to train, from which tiles, into which package (see :func:`train_object_classifier`); an initial
    package is an image-classification package of a timm model, an initial weights file a state dict of the whole
    network; ``patience`` counts epochs without a better validation balanced accuracy."""

    data: Path
    """A labelled tiles folder (Export object classification training data, or Esri's Labeled_Tiles)."""
    arch: str = DEFAULT_CLASSIFIER
    """A timm model name."""
    initial_part: str = "network"
    class_weighting: bool = True
    """Weight the cross-entropy by inverse class frequency (training chips per class)."""
    batch_size: int = 16


class ClassifierTrainResult(RunResult):
    """What the classifier run wrote and how it went."""


def _check(request: ClassifierTrainRequest) -> None:
    check_run_request(request, {"Epochs": request.epochs, "batch size": request.batch_size}, "0.001")
    check_initial(request)


def classification_scores(scores: dict[str, Any], counts: dict[str, list[int]], names: list[str]) -> dict[str, Any]:
    """:func:`analysis.metrics.class_scores` of the validation chips with ``balanced_accuracy`` (mean recall over
    the classes present) and ``majority_baseline``: the scores of always answering the most frequent training
    class (its name, accuracy and balanced accuracy on the same validation chips)."""
    present = [c for c in scores["per_class"] if c["support"]]
    majority = max(range(len(names)), key=lambda i: counts[TRAIN][i])
    n = sum(counts[VALIDATION])
    return {**scores, "balanced_accuracy": sum(c["recall"] for c in present) / len(present) if present else None,
            "majority_baseline": {"class": names[majority], "accuracy": counts[VALIDATION][majority] / n if n else None,
                                  "balanced_accuracy": (1.0 / len(present) if counts[VALIDATION][majority] else 0.0)
                                  if present else None}}


def parameters_of(request: ClassifierTrainRequest, arch: str) -> dict[str, Any]:
    """The parameters as the package's provenance and the report record them."""
    initial = (f"network of the package {request.initial_package}" if request.initial_package else
               f"weights file {request.initial_weights}" if request.initial_weights else
               "none (random; timm weights are never downloaded)")
    return {"architecture": arch, "initial_weights": initial, "new_bands": request.new_bands,
            "loss": "cross-entropy", "class_weighting": request.class_weighting, "epochs": request.epochs,
            "batch_size": request.batch_size, "learning_rate": request.learning_rate,
            "weight_decay": request.weight_decay, "optimizer": "AdamW", "schedule": request.schedule,
            "patience": request.patience, "seed": request.seed, "augmentation": "flips, 90° rotations"}


def train_object_classifier(request: ClassifierTrainRequest, callbacks: Callbacks | None = None
                            ) -> ClassifierTrainResult:
    """Train, then write the package and the report (see the module docstring)."""
    from ..tiling.predictor import resolve_device
    from .classifier_packaging import write_classifier_outputs

    cb = callbacks or Callbacks()
    _check(request)
    cb.stage("Reading the training data")
    folder = read_tile_folder(request.data)
    data = prepare_tiles(folder, request.validation_fraction, request.seed)
    split = "drawn at random by tile" if data.drawn_split else "spatial blocks (from the export)"
    cb.info(f"{len(data.train)} training and {len(data.validation)} validation tiles of {data.chip_size} px, "
            f"{data.band_count} band(s); tiles per class (training / validation): "
            + ", ".join(f"{c['name']} {a}/{b}" for c, a, b in zip(folder.classes, data.counts[TRAIN],
                                                                   data.counts[VALIDATION], strict=True))
            + f"; split: {split}.")
    missing = [c["name"] for c, n in zip(folder.classes, data.counts[VALIDATION], strict=True) if not n]
    if missing:
        cb.warning(f"Class(es) {', '.join(missing)} have no validation tile: their recall is not measured.")
    start = starting_point(request, folder, data.band_count, "timm")
    transform = chip_transform(folder, data, start, cb)
    name = start.package.architecture.arch if start and start.package else request.arch
    if start and start.package and name != request.arch:
        cb.info(f"Classifier {name}, as in {start.package.name} (its weights start the training).")
    arch = Architecture("timm", name, "", data.band_count, len(folder.classes))
    key = {"data": str(Path(request.data).resolve()), **parameters_of(request, name), "trusted": request.trust_weights,
           "mean": transform.mean, "fraction": request.validation_fraction}
    work = work_folder(Path(request.output), run_key(key))
    device = resolve_device(request.device)
    with deterministic(device.type == "cpu"):
        run = _ClassifierRun(request, folder, data, transform, arch, start, device, work, cb)
        del start
        run.train_to_end()
    return write_classifier_outputs(run, parameters_of(request, name))


class _ClassifierRun(SupervisedRun):
    """The state of one object classifier run, epoch by epoch (the loop: :class:`training.epochs.EpochRun`)."""

    score_key = "validation_balanced_accuracy"
    score_label = "validation balanced accuracy"

    def __init__(self, request: ClassifierTrainRequest, folder: TileFolder, data: PreparedTiles, transform,
                 arch: Architecture, start, device, work: Path, callbacks: Callbacks) -> None:
        import torch

        from ..models.loaders import build_network
        from .initial import load_start

        super().__init__(request, device, work, callbacks)
        self.folder, self.data, self.transform, self.arch = folder, data, transform, arch
        self.values = [int(c["value"]) for c in folder.classes]
        self.names = [str(c["name"]) for c in folder.classes]
        try:
            net = build_network(arch)
        except ModelPackageError as exc:
            raise TrainingDataError(f"timm cannot build the classifier {arch.arch!r}: {exc.__cause__ or exc} Choose "
                                    f"another model (e.g. {', '.join(CLASSIFIERS[:4])}).") from exc
        if start is not None:
            load_start(net, start, chip_band_names(folder, data.band_count), arch.in_channels, request.new_bands,
                       callbacks.info, callbacks.warning)
        self.attribution = start.attribution if start else ""
        self.net = net.to(device)
        self.setup(data, TileDataset(data.train, transform, self.values, True, request.seed),
                   TileDataset(data.validation, transform, self.values, False, request.seed),
                   lambda weights: torch.nn.CrossEntropyLoss(
                       weight=torch.tensor(weights, dtype=torch.float32) if weights else None))

    def run_epoch(self, step) -> tuple[float, float, dict[str, Any]]:
        loss, val_loss, scores = super().run_epoch(step)
        return loss, val_loss, classification_scores(scores, self.data.counts, self.names)

    def entry(self, loss: float, val_loss: float | None, scores: dict[str, Any]) -> dict[str, Any]:
        return {"validation_loss": val_loss, "validation_accuracy": scores["overall_accuracy"] or 0.0,
                "validation_balanced_accuracy": scores["balanced_accuracy"] or 0.0,
                "validation_recall": [c["recall"] for c in scores["per_class"]]}
