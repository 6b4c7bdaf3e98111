"""The outputs of a training run: the model package of the best epoch (through :func:`models.create.create_package`,
which builds the network, loads the weights strictly and runs it once before writing) and the report, all handed to
the run's transaction (:func:`tiling.transaction.stage`), so a failed run publishes nothing. The checkpoint folder
goes once the outputs are published, except after a cancel: a run started again with the same parameters then
continues from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models.create import PackageRequest, create_package
from .report import TrainingReport
from .run_outputs import publish_package, write_report


def _data(run) -> dict[str, Any]:
    return {"folder": str(Path(run.request.chips).resolve()), "layout": run.folder.layout,
            "train_chips": len(run.data.train), "validation_chips": len(run.data.validation),
            "chip_size": run.data.chip_size, "bands": _band_names(run),
            "split": "drawn at random by chip" if run.data.drawn_split else "spatial blocks",
            "pixel_counts": run.data.counts}


def _band_names(run) -> list[str]:
    names = list(run.folder.bands) or [""] * run.data.band_count
    return [names[b] or f"band {b + 1}" for b in run.transform.bands]


def _provenance(run, parameters: dict[str, Any]) -> dict[str, Any]:
    scores = run.best["scores"]
    return {"trained_with": "Deep Raster: Train segmentation model", "data": _data(run), "parameters": parameters,
            "best_epoch": run.best["epoch"], "epochs_run": len(run.history), "stopped": run.stopped,
            "history": run.history,
            "validation": {"miou": scores["miou"], "overall_accuracy": scores["overall_accuracy"],
                           "per_class_iou": {c["class"]: c["iou"] for c in scores["per_class"]}}}


def write_outputs(run, parameters: dict[str, Any]):
    """Write the package (best epoch) and the report; returns the :class:`training.train.TrainResult`."""
    from safetensors.torch import save_file

    from .train import TrainResult

    request = run.request
    run.work.mkdir(parents=True, exist_ok=True)
    weights = run.work / "best.safetensors"
    save_file({k: v.contiguous() for k, v in run.best_state.items()}, str(weights))
    t = run.transform
    scores = run.best["scores"]
    summary = (f"{run.arch.arch} ({run.arch.encoder}) trained by Deep Raster on {len(run.data.train)} chips of "
               f"{Path(request.chips).name}; best epoch {run.best['epoch']} of {len(run.history)}, validation mIoU "
               f"{scores['miou']:.4f}, overall accuracy {scores['overall_accuracy']:.4f} on "
               f"{len(run.data.validation)} validation chips.")
    size = run.data.chip_size

    def write(temp: Path) -> None:
        create_package(PackageRequest(
            weights=weights, output=temp, name=request.name or Path(request.output).stem, bands=_band_names(run),
            classes=[{"value": int(c["value"]), "name": str(c["name"]), "color": c["color"]}
                     for c in run.folder.classes],
            license=request.license, description=summary, framework="smp", arch=run.arch.arch,
            encoder=run.arch.encoder, out_channels=len(run.values), value_scale=t.scale, value_offset=t.offset,
            mean=t.mean, std=t.std, tile_size=size, overlap=size // 4, activation="softmax",
            training={"tile_size": size}, provenance=_provenance(run, parameters),
            attribution=run.start.attribution if run.start else ""))

    output, digest = publish_package(run, write)
    report = TrainingReport(str(output), _data(run), parameters, run.history, run.best["epoch"], run.stopped,
                            list(run.folder.classes), scores, digest,
                            chip_windows={"train": [list(c.window) for c in run.data.train if c.window],
                                          "validation": [list(c.window) for c in run.data.validation if c.window]})
    write_report(run, report, "The folder had no split: validation chips were drawn at random by chip, so they may "
                              "lie next to training chips and the scores may be optimistic.")
    return TrainResult.of(run, output, scores, digest)
