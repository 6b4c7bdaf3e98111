"""Training an object detector from object training data into a detection package: the core behind "Train object
detector" (``train_detector``).

Start to end: the folder is read back (:func:`training.object_chips.read_object_folder`: our export, Esri's
PASCAL_VOC_rectangles or a plain VOC folder) and cut into samples (:mod:`training.detection_data`); a torchvision
detector is built by name with random weights (:mod:`models.torchvision_detectors`: nothing is downloaded); every
epoch trains on the training samples (flips and 90° rotations drawn from the seed), detects on the validation samples
and scores them (mAP@0.5, mAP@[.5:.95]: :mod:`analysis.detection_metrics`), and is checkpointed, so a killed run
started again with the same parameters resumes (:class:`training.epochs.EpochRun`). The best epoch by validation
mAP@0.5 becomes the package (:mod:`training.detection_packaging`); a cancel keeps the best epoch so far; early
stopping ends the run after ``patience`` epochs without a better mAP@0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models.spec import TORCHVISION_DETECTORS, Architecture
from ..tiling.callbacks import Callbacks
from .checkpoint import run_key, work_folder
from .dataset import InputTransform, chip_statistics, epoch_order
from .detection_data import ObjectDataset, PreparedSamples, object_batches, prepare_samples
from .detection_loop import detector_epoch, detector_scores, precise_batch_norm
from .epochs import EpochRun
from .errors import TrainingDataError
from .loop import deterministic
from .network import SCHEDULES
from .object_chips import ObjectFolder, read_object_folder
from .run_checks import RunRequest, check_run_request
from .run_result import RunResult
from .split import VALIDATION

DEFAULT_DETECTOR = "fasterrcnn_mobilenet_v3_large_fpn"
BATCH_NORM_SAMPLES = 64
"""Training samples (unaugmented) whose average batch-norm statistics the network keeps after each epoch."""


@dataclass(kw_only=True)
class DetectorTrainRequest(RunRequest):
    """What to train, from which data, into which package (see :func:`train_detector`); ``patience`` counts epochs
    without a better validation mAP@0.5."""

    data: Path
    """An object training data folder (Export object training data, Esri PASCAL_VOC_rectangles or plain VOC)."""
    arch: str = DEFAULT_DETECTOR
    batch_size: int = 4
    learning_rate: float = 3e-4
    tile_size: int | None = None
    """Sample (and package tile) size, px; None: the chips' size (512 for images of different sizes)."""
    min_visible: float = 0.5
    """Where images are cut into samples: the least fraction of a box inside a sample to keep it (clipped)."""
    max_detections: int = 300
    """Boxes the detector returns per tile at most."""


class DetectorTrainResult(RunResult):
    """What the detector run wrote and how it went."""


def _check(request: DetectorTrainRequest) -> None:
    if request.arch not in TORCHVISION_DETECTORS:
        raise TrainingDataError(f"Unknown detector {request.arch!r}: choose one of {', '.join(TORCHVISION_DETECTORS)}.")
    check_run_request(request, {"Epochs": request.epochs, "batch size": request.batch_size,
                                "maximum detections": request.max_detections}, "0.0003", SCHEDULES)


def input_transform(folder: ObjectFolder, data: PreparedSamples, callbacks: Callbacks) -> InputTransform:
    """Model input from image values: (x − mean) / std per band with the training statistics (the manifest's, or
    computed from the training images)."""
    mean, std = folder.mean, folder.std
    if not mean or not std or len(mean) != data.band_count:
        callbacks.info("The folder records no band statistics: computing them from the training images.")
        used = {s.image for s in data.train}
        mean, std = chip_statistics([i for i in folder.images if str(i.image) in used])
    return InputTransform(tuple(range(data.band_count)), 1.0, 0.0, tuple(mean), tuple(max(s, 1e-6) for s in std))


def detector_architecture(request: DetectorTrainRequest, bands: int, classes: int) -> Architecture:
    """The torchvision detector to train, capped at ``max_detections`` boxes per tile."""
    from ..models.torchvision_detectors import detections_kwarg

    return Architecture("torchvision", request.arch, "", bands, classes,
                        {detections_kwarg(request.arch): request.max_detections})


def parameters_of(request: DetectorTrainRequest, tile: int) -> dict[str, Any]:
    """The parameters as the package's provenance and the report record them."""
    return {"architecture": request.arch, "initial_weights": "none (random; torchvision weights are never "
            "downloaded)", "epochs": request.epochs, "batch_size": request.batch_size,
            "learning_rate": request.learning_rate, "weight_decay": request.weight_decay, "optimizer": "AdamW",
            "schedule": request.schedule, "patience": request.patience, "seed": request.seed, "tile_size": tile,
            "min_visible_fraction": request.min_visible, "max_detections": request.max_detections,
            "augmentation": "flips, 90° rotations"}


def train_detector(request: DetectorTrainRequest, callbacks: Callbacks | None = None) -> DetectorTrainResult:
    """Train, then write the package and the report (see the module docstring)."""
    from ..tiling.predictor import resolve_device
    from .detection_packaging import write_detector_outputs

    cb = callbacks or Callbacks()
    _check(request)
    cb.stage("Reading the training data")
    folder = read_object_folder(request.data)
    data = prepare_samples(folder, request.tile_size, request.validation_fraction, request.seed, request.min_visible)
    split = "drawn at random by sample" if data.drawn_split else "spatial blocks (from the export)"
    cb.info(f"{len(data.train)} training and {len(data.validation)} validation samples of {data.tile} px, "
            f"{data.band_count} band(s), {len(folder.classes)} classes; boxes per class (training / validation): "
            + ", ".join(f"{c['name']} {a}/{b}" for c, a, b in zip(folder.classes, data.box_counts["train"],
                                                                   data.box_counts[VALIDATION], strict=True))
            + f"; split: {split}.")
    transform = input_transform(folder, data, cb)
    arch = detector_architecture(request, data.band_count, len(folder.classes))
    key = {"data": str(Path(request.data).resolve()), **parameters_of(request, data.tile), "mean": transform.mean,
           "fraction": request.validation_fraction}
    work = work_folder(Path(request.output), run_key(key))
    device = resolve_device(request.device)
    with deterministic(device.type == "cpu"):
        run = _DetectorRun(request, folder, data, transform, arch, device, work, cb)
        run.train_to_end()
    return write_detector_outputs(run, parameters_of(request, data.tile))


class _DetectorRun(EpochRun):
    """The state of one detector training run, epoch by epoch (the loop: :class:`training.epochs.EpochRun`)."""

    score_key = "validation_map_50"
    score_label = "validation mAP@0.5"

    def __init__(self, request: DetectorTrainRequest, folder: ObjectFolder, data: PreparedSamples,
                 transform: InputTransform, arch: Architecture, device, work: Path, callbacks: Callbacks) -> None:
        from ..models.loaders import build_network

        super().__init__(request, device, work, callbacks)
        self.folder, self.data, self.transform, self.arch = folder, data, transform, arch
        self.values = [int(c["value"]) for c in folder.classes]
        self.names = [str(c["name"]) for c in folder.classes]
        self.net = build_network(arch, self.values).to(device)
        self.train_set = ObjectDataset(data.train, transform, True, request.seed)
        self.validation_set = ObjectDataset(data.validation, transform, False, request.seed)
        self.statistics_set = ObjectDataset(data.train, transform, False, request.seed)
        self.make_optimizer(len(data.train), len(data.validation))
        self.terms: dict[str, float] = {}
        self.resume()

    def run_epoch(self, step) -> tuple[float, None, dict[str, Any]]:
        self.train_set.epoch = self.epoch
        size = self.request.batch_size
        order = epoch_order(len(self.data.train), self.request.seed, self.epoch)
        loss, self.terms = detector_epoch(self.net, object_batches(self.train_set, order, size), self.optimizer,
                                          self.scheduler, self.scaler, self.device, self.amp, self.cb, step)
        precise_batch_norm(self.net, object_batches(self.statistics_set, order[:BATCH_NORM_SAMPLES], size),
                           self.device, self.cb)
        scores = detector_scores(self.net, object_batches(self.validation_set, range(len(self.validation_set)), size),
                                 self.device, self.amp, self.values, self.names, self.cb, step)
        return loss, None, scores

    def entry(self, loss: float, val_loss: float | None, scores: dict[str, Any]) -> dict[str, Any]:
        return {"loss_terms": dict(self.terms), "validation_map_50": scores["map_50"] or 0.0,
                "validation_map_50_95": scores["map_50_95"] or 0.0,
                "validation_ap_50": [c["ap_50"] for c in scores["per_class"]]}

    def best_weights(self) -> dict[str, Any]:
        """The best epoch's weights under torchvision's own keys (what the package stores)."""
        return {k: v.detach().cpu().clone() for k, v in self.net.torchvision_state().items()}
