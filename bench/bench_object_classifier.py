"""Alive / dead tree crowns: a small timm classifier trained on the DeepForest sample crowns and scored on held-out
crowns through Classify objects (``objects.classify.classify_objects``), next to two simple baselines.

Data: the DeepForest 2.1.0 wheel on PyPI (MIT licence) ships ``SOAP_061.png`` (400 × 400 px RGB airborne image of
the NEON site SOAP, 0.1 m pixels) and ``testfile_multi.csv``, 37 crown boxes labelled Alive (9) or Dead (28). The
wheel is fetched once with ``pip download --no-deps`` into ``bench/data/deepforest/`` (git-ignored). The PNG has no
georeferencing: it is written as a GeoTIFF on a made-up 0.1 m grid in EPSG:32611 (the crowns get the same grid), so
the geometry is right but the place is not.

Protocol: stratified 5-fold cross-validation over the crowns, repeated for ``--seeds`` seeds, every crown predicted
by models that never saw it. Per fold a timm ``--arch`` network (no pretrained weights: nothing is downloaded) is
trained from scratch on the training crowns' chips (each box made square plus ``--buffer`` m, resampled to
``--chip`` px by ``objects.chips``, the reader Classify objects uses), with flips, quarter turns and a class-weighted
loss, saved as an image-classification package (``models.package.save_package``), and the held-out crowns are
classified by ``classify_objects`` from a polygon layer. Baselines on the same folds: the majority class, and a
logistic regression on the chips' colour statistics (mean and std of R, G, B and of the excess-green index).

Run: ``.venv/bin/python bench/bench_object_classifier.py [--seeds 3] [--epochs 30]``; results in
``bench/results/object_classifier.json``.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import _common
import numpy as np

_common.ensure_plugin_path()
WHEEL = "deepforest==2.1.0"
FOLDER = _common.DATA / "deepforest"
PIXEL = 0.1
ORIGIN = (500000.0, 4100000.0)
CLASSES = [{"value": 0, "name": "Dead", "color": "#8c564b"}, {"value": 1, "name": "Alive", "color": "#2ca02c"}]


def fetch() -> tuple[Path, Path]:
    """``SOAP_061.png`` and ``testfile_multi.csv`` from the DeepForest wheel (downloaded once)."""
    png, table = FOLDER / "SOAP_061.png", FOLDER / "testfile_multi.csv"
    if png.exists() and table.exists():
        return png, table
    FOLDER.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", tmp],
                       check=True)
        wheel = next(Path(tmp).glob("deepforest-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for target in (png, table):
                with z.open(f"deepforest/data/{target.name}") as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    return png, table


def prepare(png: Path, table: Path, work: Path) -> tuple[Path, list[tuple[float, float, float, float]], np.ndarray]:
    """The image as a GeoTIFF on the made-up grid, the crowns' boxes in map units (xmin, xmax, ymin, ymax) and
    their labels (0 Dead, 1 Alive)."""
    from osgeo import gdal, osr

    gdal.UseExceptions()
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32611)
    raster = work / "SOAP_061.tif"
    ds = gdal.Translate(str(raster), str(png), outputSRS=srs.ExportToWkt(),
                        outputBounds=[ORIGIN[0], ORIGIN[1], ORIGIN[0] + 400 * PIXEL, ORIGIN[1] - 400 * PIXEL])
    for i, name in enumerate(("red", "green", "blue")):
        ds.GetRasterBand(i + 1).SetDescription(name)
    ds = None
    boxes, labels = [], []
    with open(table, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            x0, y0, x1, y1 = (float(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            boxes.append((ORIGIN[0] + x0 * PIXEL, ORIGIN[0] + x1 * PIXEL, ORIGIN[1] - y1 * PIXEL,
                          ORIGIN[1] - y0 * PIXEL))
            labels.append({"Dead": 0, "Alive": 1}[row["label"]])
    return raster, boxes, np.asarray(labels)


def polygons(path: Path, boxes: list) -> Path:
    """The boxes as a GeoPackage polygon layer in EPSG:32611."""
    sys.path.insert(0, str(_common.ROOT / "tests"))
    from helpers import write_vector

    wkts = [f"POLYGON (({a} {c}, {b} {c}, {b} {d}, {a} {d}, {a} {c}))" for a, b, c, d in boxes]
    return write_vector(path, wkts, epsg=32611)


def chips(raster: Path, boxes: list, buffer: float, size: int) -> np.ndarray:
    """Raw-unit chips (0–255, 3 bands) of every crown, read as Classify objects reads them."""
    from deepraster.objects.chips import ChipReader, chip_box, footprint_window
    from deepraster.tiling.reader import InputTransform
    from deepraster.tiling.source import RasterSource

    source = RasterSource.open(str(raster))
    with ChipReader(source, InputTransform(bands=(1, 2, 3)), size) as reader:
        return np.stack([reader.read(chip_box(b, source.geotransform, buffer),
                                     footprint_window(b, source.geotransform)).chip for b in boxes])


def folds(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Stratified folds: each class's crowns shuffled and dealt round-robin."""
    rng = np.random.default_rng(seed)
    out = [[] for _ in range(k)]
    start = 0
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        for i, index in enumerate(members):
            out[(start + i) % k].append(int(index))
        start += len(members)
    return [np.asarray(sorted(f)) for f in out]


def train(x: np.ndarray, y: np.ndarray, arch: str, epochs: int, seed: int):
    """A timm network trained from scratch on normalised chips (flips, quarter turns, class-weighted loss)."""
    import timm
    import torch

    torch.manual_seed(seed)
    net = timm.create_model(arch, pretrained=False, num_classes=2, in_chans=x.shape[1])
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs)
    counts = np.bincount(y, minlength=2)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(len(y) / (2 * counts), dtype=torch.float32))
    data, target = torch.from_numpy(x), torch.from_numpy(y)
    rng = np.random.default_rng(seed)
    net.train()
    for _ in range(epochs):
        batch = data.clone()
        for i in range(len(batch)):
            k, flip = int(rng.integers(4)), bool(rng.integers(2))
            batch[i] = torch.rot90(batch[i].flip(-1) if flip else batch[i], k, (1, 2))
        optimiser.zero_grad()
        loss_fn(net(batch), target).backward()
        optimiser.step()
        schedule.step()
    return net.eval()


def colour_features(x: np.ndarray) -> np.ndarray:
    """Per chip: mean and std of R, G, B (0–1) and of the excess-green index 2G − R − B."""
    rgb = x / 255.0
    exg = 2 * rgb[:, 1] - rgb[:, 0] - rgb[:, 2]
    return np.column_stack([rgb.mean(axis=(2, 3)), rgb.std(axis=(2, 3)), exg.mean(axis=(1, 2)),
                            exg.std(axis=(1, 2))])


def run(args: argparse.Namespace) -> dict:
    from deepraster.models.package import save_package
    from deepraster.models.sources import open_model
    from deepraster.objects.classify import ClassifyObjectsRequest, classify_objects
    from osgeo import ogr
    from sklearn.linear_model import LogisticRegression

    png, table = fetch()
    work = Path(tempfile.mkdtemp(prefix="bench_objcls_"))
    raster, boxes, labels = prepare(png, table, work)
    raw = chips(raster, boxes, args.buffer, args.chip)
    predicted = {"timm": [], "majority": [], "colour": []}
    reference, seconds = [], {"train": 0.0, "classify": 0.0}
    for seed in range(args.seeds):
        for f, test in enumerate(folds(labels, 5, seed)):
            fit = np.setdiff1d(np.arange(len(labels)), test)
            mean, std = raw[fit].mean(axis=(0, 2, 3)) / 255, raw[fit].std(axis=(0, 2, 3)) / 255
            x = ((raw[fit] / 255 - mean[:, None, None]) / std[:, None, None]).astype(np.float32)
            start = time.perf_counter()
            net = train(x, labels[fit], args.arch, args.epochs, seed * 10 + f)
            seconds["train"] += time.perf_counter() - start
            description = {
                "name": f"alive-dead-{args.arch}", "license": "MIT", "task": "image_classification",
                "architecture": {"framework": "timm", "arch": args.arch, "in_channels": 3, "out_channels": 2},
                "input": {"bands": ["red", "green", "blue"], "value_scale": 1 / 255,
                          "normalization": {"type": "mean_std", "mean": mean.tolist(), "std": std.tolist()}},
                "inference": {"tile_size": args.chip, "activation": "softmax"}, "classes": CLASSES,
                "provenance": {"training_data": "DeepForest 2.1.0 SOAP_061 Alive/Dead crowns (MIT)"}}
            package = open_model(save_package(work / f"pkg_{seed}_{f}", description, net.state_dict()))
            layer = polygons(work / f"test_{seed}_{f}.gpkg", [boxes[i] for i in test])
            out = work / f"out_{seed}_{f}.gpkg"
            start = time.perf_counter()
            classify_objects(ClassifyObjectsRequest(str(raster), package, str(layer), str(out), buffer=args.buffer,
                                                    device="cpu"))
            seconds["classify"] += time.perf_counter() - start
            ds = ogr.Open(str(out))
            predicted["timm"] += [feature.GetField("class_value") for feature in ds.GetLayer(0)]
            ds = None
            predicted["majority"] += [int(np.bincount(labels[fit]).argmax())] * len(test)
            colour = LogisticRegression(class_weight="balanced", max_iter=2000)
            colour.fit(colour_features(raw[fit]), labels[fit])
            predicted["colour"] += colour.predict(colour_features(raw[test])).tolist()
            reference += labels[test].tolist()
    shutil.rmtree(work, ignore_errors=True)
    return {"reference": reference, "predicted": predicted, "seconds": seconds, "labels": labels}


def main(argv: list[str] | None = None) -> int:
    from deepraster.analysis.metrics import class_scores, confusion_matrix

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet10t", help="timm model name (trained from scratch)")
    parser.add_argument("--chip", type=int, default=64, help="chip size the classifier takes (px)")
    parser.add_argument("--buffer", type=float, default=1.0, help="metres around each crown box")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3, help="repetitions of the 5-fold cross-validation")
    parser.add_argument("--out", type=Path, default=_common.RESULTS / "object_classifier.json")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = run(args)
    reference = np.asarray(result["reference"])
    scores = {}
    for name, values in result["predicted"].items():
        s = class_scores(confusion_matrix(reference, np.asarray(values), [0, 1]), [0, 1], ["Dead", "Alive"])
        s["balanced_accuracy"] = float(np.mean([c["recall"] for c in s["per_class"]]))
        scores[name] = s
    labels = result["labels"]
    report = {
        "machine": _common.machine_info(), "settings": vars(args) | {"out": str(args.out)},
        "data": {"source": f"{WHEEL} wheel (PyPI, MIT): deepforest/data/SOAP_061.png + testfile_multi.csv",
                 "crowns": int(len(labels)), "dead": int((labels == 0).sum()), "alive": int((labels == 1).sum()),
                 "georeferencing": "made up (0.1 m grid, EPSG:32611): the PNG has none"},
        "protocol": f"stratified 5-fold cross-validation x {args.seeds} seeds; each crown predicted once per seed by "
                    "a model that never saw it; the timm model through classify_objects on the held-out polygons",
        "scores": scores,
        "seconds": {k: round(v, 1) for k, v in result["seconds"].items()} | {
            "total": round(time.perf_counter() - start, 1)},
        "limits": "37 crowns from one 400 x 400 px image (9 alive): each fold tests 7-8 crowns, so one crown is "
                  "12-14 points of accuracy; neighbouring crowns overlap in their chips (spatial leakage between "
                  "folds); no pretrained weights offline, so the network learns from ~30 chips; the labels are "
                  "DeepForest's test fixture, not a curated benchmark.",
    }
    _common.write_json(args.out, report)
    for name, s in scores.items():
        print(f"{name:9s} accuracy {s['overall_accuracy']:.3f}  balanced {s['balanced_accuracy']:.3f}  "
              f"kappa {s['kappa'] if s['kappa'] is None else round(s['kappa'], 3)}  "
              f"confusion (rows Dead, Alive) {s['confusion_matrix']['matrix']}")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
