"""The whole training workflow through ``qgis_process``, as a user would chain it, and the check that closes it.

export_training_data (10 m scene, OSM land-use polygons, 64 px chips, blocks of 2560 m) → train_segmentation
(U-Net resnet18 from scratch, seeded) → classify_pixels on the whole scene → evaluate_classes against the export's
validation chips. With tiles equal to the chips (64 px, no overlap, no edge margin) the scene run predicts every
validation chip exactly as the training report did, so both must give the same mIoU on the same pixels; with the
package's default tiling (overlap, Hann blending) the figure differs by what blending changes.

Run: ``.venv/bin/python bench/bench_training_roundtrip.py [--epochs 6] [--out bench/results/roundtrip.json]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

QGIS_PROCESS = _common.ROOT / "scripts" / "qgis_process"
SCENE = _common.ROOT / ".data" / "s2" / "s2_l1c_10m.tif"
OSM = _common.ROOT / ".data" / "s2" / "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg"


def qgis_process(algorithm: str, **params: Any) -> tuple[dict[str, Any], float]:
    """Run ``deepraster:<algorithm>`` through qgis_process (JSON output); its results and wall time (s)."""
    args = [str(QGIS_PROCESS), "--json", "run", f"deepraster:{algorithm}", "--"]
    args += [f"{key}={value}" for key, value in params.items()]
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=_common.child_env(), timeout=3600)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{algorithm} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout[done.stdout.index("{"):])["results"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=_common.RESULTS / "roundtrip.json")
    args = parser.parse_args()
    data: dict[str, Any] = {"machine": _common.machine_info(), "epochs": args.epochs, "seconds": {}}
    with tempfile.TemporaryDirectory(prefix="deepraster-roundtrip-") as work:
        w = Path(work)
        chips = w / "chips"
        _, data["seconds"]["export"] = qgis_process(
            "export_training_data", INPUT=SCENE, LABELS=OSM, LABEL_FIELD="fclass", BANDS="2,3,4,8", CHIP_SIZE=64,
            BLOCK_SIZE=2560, SEED=0, OUTPUT=chips)
        trained, data["seconds"]["train"] = qgis_process(
            "train_segmentation", CHIPS=chips, EPOCHS=args.epochs, SEED=0, NAME="osm-landuse", LICENSE="CC-BY-4.0",
            OUTPUT=w / "osm.drpk", OUTPUT_REPORT=w / "report.html", OUTPUT_REPORT_JSON=w / "report.json")
        data["report_miou"] = trained["MIOU"]
        data["best_epoch"] = trained["BEST_EPOCH"]
        for name, tiling in (("tiles_equal_chips", {"TILE_SIZE": 64, "OVERLAP": 0}), ("package_defaults", {})):
            classes = w / f"classes_{name}.tif"
            _, seconds = qgis_process("classify_pixels", INPUT=SCENE, MODEL=w / "osm.drpk", BANDS="2,3,4,8",
                                      OUTPUT_CLASSES=classes, **tiling)
            scored, _ = qgis_process("evaluate_classes", INPUT=classes, CHIPS=chips,
                                     OUTPUT_REPORT=w / f"evaluation_{name}.html")
            data[name] = {"miou": scored["MIOU"], "overall_accuracy": scored["OA"], "classify_s": round(seconds, 1)}
        data["same_miou_when_tiles_equal_chips"] = abs(data["tiles_equal_chips"]["miou"] - data["report_miou"]) < 1e-9
    _common.write_json(args.out, data)
    print(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
