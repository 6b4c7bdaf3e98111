"""Resuming a feature extraction killed mid-way (SIGKILL: no cleanup code runs), in separate processes.

A child process runs the extraction slowly (a pause after each batch) and is killed once the checkpoint says rows
are written; a second child with the same parameters continues from the checkpoint. Its result must equal, value
for value, an uninterrupted run's, and no temporary file may remain.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
from helpers import smooth_field
from osgeo import gdal

CHILD = r"""
import json, sys
from deepraster.models.feature_extraction import FeatureRequest, extract_features
raster, weights, output, pause = sys.argv[1:5]
result = extract_features(FeatureRequest(raster=raster, output=output, timm_model="resnet18", weights=weights,
                                         stride=8, value_scale=1e-4, device="cpu", batch_size=2, block_size=16,
                                         pause_s=float(pause)))
s = result.stats
print(json.dumps({"rows_resumed": s.rows_resumed, "tiles_resumed": s.tiles_resumed,
                  "tiles_predicted": s.tiles_predicted, "tiles_total": s.tiles_total}), flush=True)
"""


def child(raster: Path, weights: Path, output: Path, pause: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, "-c", CHILD, str(raster), str(weights), str(output), str(pause)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def test_killed_run_resumes_to_identical_result(make_raster, tmp_path: Path) -> None:
    raw = smooth_field(4, 1280, 512, seed=11)
    raster = make_raster("scene.tif", raw)
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", in_chans=4).state_dict(), weights)
    reference = child(raster, weights, tmp_path / "reference.tif", 0.0)  # uninterrupted, same parameters

    output = tmp_path / "features.tif"
    state_file = tmp_path / ".features.tif.resume.json"
    victim = child(raster, weights, output, 0.4)
    deadline = time.monotonic() + 240
    rows_done = 0
    while rows_done < 64 and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.05)
        try:
            rows_done = json.loads(state_file.read_text())["rows_done"]
        except (OSError, ValueError, KeyError):
            continue
    assert victim.poll() is None, "the run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    state = json.loads(state_file.read_text())
    assert state["rows_done"] >= 64 and (tmp_path / state["temp"]).is_file() and not output.exists()

    resumed = finish(child(raster, weights, output, 0.0))
    full = finish(reference)
    assert resumed["rows_resumed"] == state["rows_done"]
    assert resumed["tiles_resumed"] > 0 and resumed["tiles_predicted"] < full["tiles_predicted"]
    a = gdal.Open(str(tmp_path / "reference.tif")).ReadAsArray()
    b = gdal.Open(str(output)).ReadAsArray()
    assert a.shape == (128, 160, 64)
    np.testing.assert_array_equal(a, b)  # identical values, not just close
    print(f"\n[resume] killed after {state['rows_done']} of 160 output rows; the resumed run predicted "
          f"{resumed['tiles_predicted']} of {full['tiles_predicted']} tiles and equals the uninterrupted run exactly")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.tif", "reference.tif", "resnet18.pth",
                                                          "scene.tif"]
