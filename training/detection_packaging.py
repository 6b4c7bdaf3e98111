"""The outputs of a detector training run: the detection package of the best epoch (through
:func:`models.detectors.write_detection_package`, which loads the weights back strictly and runs the detector once
before the archive is complete) and the report, handed to the run's transaction (:func:`tiling.transaction.stage`),
so a failed run publishes nothing. The checkpoint folder goes once the outputs are published, except after a cancel:
a run started again with the same parameters then continues from it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..models.detectors import write_detection_package
from .detection_report import DetectionReport
from .run_outputs import data_band_names, publish_package, write_report


def data_summary(run) -> dict[str, Any]:
    """What the run trained on (for the report and the package's provenance)."""
    return {"folder": str(Path(run.request.data).resolve()), "layout": run.folder.layout,
            "train_samples": len(run.data.train), "validation_samples": len(run.data.validation),
            "tile_size": run.data.tile, "bands": data_band_names(run),
            "split": "drawn at random by sample" if run.data.drawn_split else "spatial blocks",
            "box_counts": run.data.box_counts, "largest_box_px": run.data.largest_box}


def _overlap(run) -> int:
    """The package's tile overlap: the longest training box (objects should fit in the overlap), at least a quarter
    and at most half of the tile."""
    tile = run.data.tile
    return min(tile // 2, max(tile // 4, math.ceil(run.data.largest_box)))


def description(run, parameters: dict[str, Any]) -> dict[str, Any]:
    """The ``model.json`` of the package (weights entry added when it is written)."""
    request, t, scores = run.request, run.transform, run.best["scores"]
    name = request.name or Path(request.output).stem
    summary = (f"{request.arch} trained by Deep Raster on {len(run.data.train)} samples of "
               f"{Path(request.data).name}; best epoch {run.best['epoch']} of {len(run.history)}, validation mAP@0.5 "
               f"{scores['map_50'] or 0:.4f}, mAP@[.5:.95] {scores['map_50_95'] or 0:.4f} on "
               f"{len(run.data.validation)} validation samples.")
    return {
        "name": name, "version": "1.0.0", "description": summary, "license": request.license,
        "task": "object_detection",
        "architecture": {"framework": "torchvision", "arch": run.arch.arch, "in_channels": run.arch.in_channels,
                         "out_channels": run.arch.out_channels, "kwargs": dict(run.arch.kwargs)},
        "input": {"bands": [{"name": n, "default_band": i + 1} for i, n in enumerate(data_band_names(run))],
                  "value_scale": t.scale, "value_offset": t.offset,
                  "normalization": {"type": "mean_std", "mean": list(t.mean), "std": list(t.std)}},
        "inference": {"tile_size": run.data.tile, "overlap": _overlap(run), "size_divisor": 32},
        "training": {"tile_size": run.data.tile},
        "classes": [{"value": int(c["value"]), "name": str(c["name"]), "color": c["color"]}
                    for c in run.folder.classes],
        "provenance": {"trained_with": "Deep Raster: Train object detector", "data": data_summary(run),
                       "parameters": parameters, "best_epoch": run.best["epoch"], "epochs_run": len(run.history),
                       "stopped": run.stopped, "history": run.history,
                       "validation": {k: scores[k] for k in ("map_50", "map_50_95")}
                       | {"per_class_ap_50": {c["class"]: c["ap_50"] for c in scores["per_class"]}}},
    }


def write_detector_outputs(run, parameters: dict[str, Any]):
    """Write the package (best epoch) and the report; returns the
    :class:`training.detection_train.DetectorTrainResult`."""
    from .detection_train import DetectorTrainResult

    output, digest = publish_package(
        run, lambda temp: write_detection_package(temp, description(run, parameters), run.best_state))
    windows: dict[str, list[list[int]]] = {}
    for split, samples in (("train", run.data.train), ("validation", run.data.validation)):
        windows[split] = [list(s.source_window) for s in samples if s.source_window]
    report = DetectionReport(str(output), data_summary(run), parameters, run.history, run.best["epoch"], run.stopped,
                             list(run.folder.classes), run.best["scores"], digest, chip_windows=windows)
    write_report(run, report, "The folder had no split: validation samples were drawn at random, so they may lie "
                              "next to training samples and the scores may be optimistic.")
    return DetectorTrainResult.of(run, output, run.best["scores"], digest)
