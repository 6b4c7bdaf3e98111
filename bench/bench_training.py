"""Train segmentation model on the real 10 m Sentinel-2 scene with the OSM land-use polygons (issue 13's experiment).

1. Export training data (B02, B03, B04, B08; 64 px chips; spatial blocks of 2560 m; seed 0) through Processing.
2. Throughput: one epoch of ``training.loop.train_epoch`` fed by the real loader (chips read from disk, one batch
   ahead in a thread) against the same batches held in memory (the model's bare forward + backward + step).
3. A U-Net (resnet18) from scratch (cross-entropy; and with inverse-frequency class weights + Dice), and one
   fine-tuned from the packaged ukis-csmask 4-band EfficientNet-B4 encoder (same chips, parameters and seed):
   validation mIoU, per-class IoU, epochs and wall time.
4. A random forest on the raw bands, trained on the labelled pixels of the training chips and scored on exactly the
   labelled pixels of the validation chips (the pixels the training report scores).
5. The from-scratch package classifies the whole scene through Processing (``classify_pixels``); its class raster is
   scored on the same validation pixels.

Run: ``.venv/bin/python bench/bench_training.py [--epochs 15] [--threads 2] [--out bench/results/training.json]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

OSM = _common.ROOT / ".data" / "s2" / "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg"
SCENE = _common.ROOT / ".data" / "s2" / "s2_l1c_10m.tif"
UKIS = _common.ROOT / ".data" / "models" / "ukis-csmask-4b-l1c"


def start_qgis():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # headless, like the tests
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    from deepraster.provider import DeepRasterProvider

    provider = DeepRasterProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    return app, provider


def export(folder: Path) -> Path:
    import processing

    out = folder / "chips"
    processing.run("deepraster:export_training_data", {
        "INPUT": str(SCENE), "LABELS": str(OSM), "LABEL_FIELD": "fclass", "BANDS": [1, 2, 3, 7], "CHIP_SIZE": 64,
        "BLOCK_SIZE": 2560, "SEED": 0, "OUTPUT": str(out)})
    return out


def throughput(chips: Path, batch_size: int) -> dict[str, Any]:
    """Seconds of one training epoch from disk, and of the same batches from memory (fastest of three each)."""
    import torch
    from deepraster.tiling.callbacks import Callbacks
    from deepraster.training.chips import read_chip_folder
    from deepraster.training.dataset import ChipDataset, InputTransform, batches, class_lookup, prepare_chips
    from deepraster.training.loop import train_epoch
    from deepraster.training.network import architecture, build, make_loss, make_schedule

    folder = read_chip_folder(chips)
    data = prepare_chips(folder, 0.2, 0)
    transform = InputTransform(tuple(range(data.band_count)), 1.0, 0.0, tuple(folder.mean), tuple(folder.std))
    dataset = ChipDataset(data.train, transform, class_lookup([c["value"] for c in folder.classes]), True, 0)
    order = list(range(len(dataset) - len(dataset) % batch_size))
    torch.manual_seed(0)
    net = build(architecture("Unet", "resnet18", data.band_count, len(folder.classes)), None)
    loss = make_loss("ce", None)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    sched = make_schedule("constant", opt, 1e-3, 1000)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    device = torch.device("cpu")
    args = (net, None, loss, opt, sched, scaler, device, False, Callbacks(), lambda: None)
    train_epoch(*(args[:1] + (batches(dataset, order[:2 * batch_size], batch_size),) + args[2:]))  # warm-up
    held = list(batches(dataset, order, batch_size))
    from_disk, in_memory = [], []
    for _ in range(3):  # interleaved; the fastest of three of each (other work on the machine only slows down)
        began = time.perf_counter()
        train_epoch(*(args[:1] + (batches(dataset, order, batch_size),) + args[2:]))
        from_disk.append(time.perf_counter() - began)
        began = time.perf_counter()
        train_epoch(*(args[:1] + (held,) + args[2:]))
        in_memory.append(time.perf_counter() - began)
    from_disk, in_memory = min(from_disk), min(in_memory)
    return {"chips": len(order), "batch_size": batch_size, "epoch_from_disk_s": round(from_disk, 2),
            "epoch_in_memory_s": round(in_memory, 2), "ratio": round(in_memory / from_disk, 3)}


def train(chips: Path, out: Path, epochs: int, initial: Path | None, **extra: Any) -> dict[str, Any]:
    from deepraster.training.train import TrainRequest, train_segmentation

    began = time.perf_counter()
    result = train_segmentation(TrainRequest(
        chips=chips, output=out, report_html=out.with_suffix(".html"), report_json=out.with_suffix(".json"),
        initial_package=initial, epochs=epochs, batch_size=8, learning_rate=1e-3, patience=5, seed=0, device="cpu",
        **extra))
    v = result.validation
    return {"wall_s": round(time.perf_counter() - began, 1), "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch, "stopped": result.stopped, "miou": v["miou"],
            "overall_accuracy": v["overall_accuracy"], "per_class_iou": {c["class"]: c["iou"] for c in v["per_class"]},
            "history": [{k: h[k] for k in ("epoch", "train_loss", "validation_loss", "validation_miou", "seconds")}
                        for h in result.history]}


def _pixels(chips, n_bands: int):
    """Raw band values (pixels × bands) and class values of the labelled pixels of ``chips``."""
    import numpy as np
    from deepraster.training.dataset import read_array

    xs, ys = [], []
    for chip in chips:
        image, label = read_array(chip.image), read_array(chip.label)[0]
        keep = label != 255
        xs.append(image.reshape(n_bands, -1)[:, keep.ravel()].T)
        ys.append(label[keep])
    return np.concatenate(xs), np.concatenate(ys)


def random_forest(chips: Path, threads: int) -> dict[str, Any]:
    import numpy as np
    from deepraster.analysis.metrics import ConfusionMatrix
    from deepraster.training.chips import read_chip_folder
    from deepraster.training.dataset import prepare_chips
    from sklearn.ensemble import RandomForestClassifier

    folder = read_chip_folder(chips)
    data = prepare_chips(folder, 0.2, 0)
    x, y = _pixels(data.train, data.band_count)
    pick = np.random.default_rng(0).choice(len(y), min(len(y), 200_000), replace=False)
    began = time.perf_counter()
    forest = RandomForestClassifier(n_estimators=100, n_jobs=threads, random_state=0).fit(x[pick], y[pick])
    fit_s = time.perf_counter() - began
    xv, yv = _pixels(data.validation, data.band_count)
    values = [c["value"] for c in folder.classes]
    matrix = ConfusionMatrix(values)
    matrix.update(yv, forest.predict(xv))
    scores = matrix.scores([c["name"] for c in folder.classes])
    return {"training_pixels": int(len(pick)), "validation_pixels": int(len(yv)), "fit_s": round(fit_s, 1),
            "miou": scores["miou"], "overall_accuracy": scores["overall_accuracy"],
            "per_class_iou": {c["class"]: c["iou"] for c in scores["per_class"]}}


def scene_score(chips: Path, package: Path, folder: Path) -> dict[str, Any]:
    """Classify the whole scene with ``package`` and score the class raster on the validation chips' pixels."""
    import processing
    from deepraster.analysis.metrics import ConfusionMatrix
    from deepraster.training.chips import read_chip_folder
    from deepraster.training.dataset import read_array
    from osgeo import gdal

    began = time.perf_counter()
    out = processing.run("deepraster:classify_pixels", {"INPUT": str(SCENE), "MODEL": str(package), "DEVICE": "cpu",
                                                        "OUTPUT_CLASSES": str(folder / "scene_classes.tif")})
    seconds = time.perf_counter() - began
    dataset = gdal.Open(out["OUTPUT_CLASSES"])  # kept: a band dies with its dataset
    band = dataset.GetRasterBand(1)
    chip_folder = read_chip_folder(chips)
    matrix = ConfusionMatrix([c["value"] for c in chip_folder.classes], ignore=255)
    for chip in chip_folder.chips:
        if chip.split == "validation":
            col, row, width, height = chip.window
            matrix.update(read_array(chip.label)[0], band.ReadAsArray(col, row, width, height))
    scores = matrix.scores([c["name"] for c in chip_folder.classes])
    return {"classify_s": round(seconds, 1), "miou": scores["miou"], "overall_accuracy": scores["overall_accuracy"],
            "pixels": scores["n"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-finetune", action="store_true")
    parser.add_argument("--out", type=Path, default=_common.RESULTS / "training.json")
    args = parser.parse_args()
    _common.ensure_plugin_path()
    import torch

    torch.set_num_threads(args.threads)
    app, provider = start_qgis()  # noqa: F841 (kept alive for the whole run)
    result: dict[str, Any] = {"machine": _common.machine_info(), "threads": args.threads, "epochs": args.epochs}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        chips = export(work)
        result["throughput"] = throughput(chips, 8)
        print(result["throughput"], flush=True)
        result["scratch"] = train(chips, work / "scratch.drpk", args.epochs, None)
        print({k: v for k, v in result["scratch"].items() if k != "history"}, flush=True)
        result["scratch_weighted_ce_dice"] = train(chips, work / "weighted.drpk", args.epochs, None, loss="ce+dice",
                                                   class_weighting=True)
        print({k: v for k, v in result["scratch_weighted_ce_dice"].items() if k != "history"}, flush=True)
        if not args.skip_finetune:
            result["finetuned_ukis"] = train(chips, work / "ukis.drpk", args.epochs, UKIS)
            print({k: v for k, v in result["finetuned_ukis"].items() if k != "history"}, flush=True)
        result["random_forest"] = random_forest(chips, args.threads)
        print(result["random_forest"], flush=True)
        result["scene_classified_scratch"] = scene_score(chips, work / "scratch.drpk", work)
        print(result["scene_classified_scratch"], flush=True)
    _common.write_json(args.out, result)
    print(args.out)


if __name__ == "__main__":
    main()
