"""What the bad-input matrix (tests/test_bad_inputs*.py, issue 12) shares: a world of damaged and odd inputs built
once per session, a case type, and the check every case must pass.

A case is one careless user's run through ``processing.run`` in real QGIS. It must fail with a
``QgsProcessingException`` whose message says what is wrong (``what``) and what to do (``how``), holds no Python
traceback, leaves no file in the output folder (no partial, temporary or lock file), and leaves an earlier output at
the destination byte-identical. The inputs are left as they were, too.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from helpers import MODEL_4B_L1C, MODEL_6B_L1C, smooth_field, write_raster, write_vector

GT = (500000.0, 10.0, 0.0, 5800000.0, 0.0, -10.0)
S2_4 = ("B02", "B03", "B04", "B08")
S2_6 = ("B02", "B03", "B04", "B08", "B11", "B12")
LABELS = ("water", "forest", "farm")
# what the user is told to do: every message has one of these
HOW = (r"\b(choose|give|check|lower|untick|tick|add|use|name it|copy|re-create|create|fix|leave|georeference|"
       r"warp|draw|save|install|run|write|remove)\b")


@dataclass(frozen=True)
class Case:
    """One bad run: algorithm, parameters made from the world and the output folder, and the words the message must
    hold (``what``: a regular expression naming the problem; the "how" is checked against :data:`HOW`)."""

    id: str
    alg: str
    params: Callable[[dict, Path], dict]
    what: str
    prepare: Callable[[Path], None] | None = None
    keep_older: bool = True  # put an older file at every output in the output folder first
    extra: tuple[str, ...] = field(default_factory=tuple)  # more patterns the message must hold


def square(col: int, row: int, size: int = 6) -> str:
    x0, y0 = GT[0] + col * 10, GT[3] - row * 10
    x1, y1 = x0 + size * 10, y0 - size * 10
    return f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"


def point(col: int, row: int) -> str:
    return f"POINT({GT[0] + (col + 0.5) * 10} {GT[3] - (row + 0.5) * 10})"


def _scene() -> np.ndarray:
    """6 bands, 60 × 90 px: three land covers side by side (columns 0–29, 30–59, 60–89), a little noise."""
    looks = np.array([[800, 700, 500, 200, 100, 50], [300, 500, 300, 3000, 1500, 700],
                      [900, 1000, 1100, 2500, 2800, 2200]], np.float32)
    cover = np.repeat(np.arange(3), 30)[None, :].repeat(60, axis=0)
    noise = np.random.default_rng(0).normal(0, 30, (6, 60, 90)).astype(np.float32)
    return looks[cover].transpose(2, 0, 1) + noise


def _package_copy(folder: Path, source: Path, edit: Callable[[dict], None], weights: bytes | None = None) -> Path:
    """A package folder whose model.json is ``source``'s edited; weights copied (or ``weights`` written instead)."""
    import json

    folder.mkdir()
    description = json.loads((source / "model.json").read_text())
    edit(description)
    (folder / "model.json").write_text(json.dumps(description))
    name = description["weights"]["file"]
    if weights is None:
        shutil.copy(source / name, folder / name)  # a link would be refused: it leads out of the folder
    else:
        (folder / name).write_bytes(weights)
    return folder


def _no_sha(description: dict) -> None:
    description["weights"].pop("sha256", None)


def build_world(root: Path) -> dict:
    """Every input the cases use, under ``root/in`` (never written by a case) and ``root/pkg``."""
    import torch

    inp, pkg = root / "in", root / "pkg"
    inp.mkdir()
    pkg.mkdir()
    w: dict = {"in": inp, "m4": str(MODEL_4B_L1C), "m6": str(MODEL_6B_L1C)}
    w["r4"] = str(write_raster(inp / "r4.tif", smooth_field(4, 64, 64), descriptions=S2_4))
    w["r4_plain"] = str(write_raster(inp / "r4_plain.tif", smooth_field(4, 64, 64)))
    w["r1"] = str(write_raster(inp / "r1.tif", smooth_field(1, 64, 64), descriptions=("B02",)))
    w["r6"] = str(write_raster(inp / "r6.tif", _scene(), descriptions=S2_6))
    w["nodata"] = str(write_raster(inp / "nodata.tif", np.zeros((4, 64, 64), np.uint16), nodata=0,
                                   descriptions=S2_4))
    w["px1"] = str(write_raster(inp / "px1.tif", smooth_field(6, 1, 1).astype(np.float32), descriptions=S2_6))
    from osgeo import gdal

    scene = _scene()
    ds = gdal.GetDriverByName("GTiff").Create(str(inp / "nogeo.tif"), 90, 60, 6, gdal.GDT_Float32)
    for i in range(6):  # no geotransform, no CRS: a scan or a photo
        ds.GetRasterBand(i + 1).WriteArray(scene[i])
    ds = None
    nogeo = inp / "nogeo.tif"
    w["nogeo"] = str(nogeo)
    plain = write_raster(root / "plain.tif", smooth_field(4, 64, 64), descriptions=S2_4, creation_options=())
    data = plain.read_bytes()
    (inp / "trunc.tif").write_bytes(data[: len(data) // 2])
    w["trunc"] = str(inp / "trunc.tif")
    gone = write_raster(root / "gone.tif", smooth_field(4, 64, 64), descriptions=S2_4)
    gdal.Translate(str(inp / "missing.vrt"), str(gone), format="VRT")
    gone.unlink()
    w["vrt"] = str(inp / "missing.vrt")
    (inp / "notes.txt").write_text("not a raster, not a model\n")
    w["text"] = str(inp / "notes.txt")
    (inp / "folder").mkdir()
    w["folder"] = str(inp / "folder")
    w["nope_tif"], w["nope_joblib"], w["nope_gpkg"] = (str(inp / n) for n in ("nope.tif", "nope.joblib",
                                                                              "nope.gpkg"))
    (inp / "garbage.joblib").write_bytes(np.random.default_rng(1).bytes(400))
    w["garbage"] = str(inp / "garbage.joblib")
    polygons, labels, groups = [], [], []
    for k in range(3):
        for j, row in enumerate((5, 25, 45)):
            polygons.append(square(30 * k + 5 + 6 * j, row))
            labels.append(LABELS[k])
            groups.append(f"g{j}")
    w["training"] = str(write_vector(inp / "training.gpkg", polygons, {"fclass": labels, "zone": groups,
                                                                       "site": ["A"] * len(labels)}))
    w["two_points"] = str(write_vector(inp / "two_points.gpkg", [point(5, 5), point(65, 5)],
                                       {"fclass": ["water", "farm"]}))
    w["one_polygon"] = str(write_vector(inp / "one_polygon.gpkg", [square(5, 5)], {"fclass": ["water"]}))
    w["far"] = str(write_vector(inp / "far.gpkg", ["POINT(100.5 10.5)", "POINT(100.6 10.6)"],
                                {"fclass": ["water", "farm"]}, epsg=4326))
    torch.save(torch.nn.Conv2d(4, 3, 1), inp / "module.pt")  # a whole pickled module, not a state dict
    w["pickle"] = str(inp / "module.pt")
    w["badsha"] = str(_package_copy(pkg / "badsha", MODEL_4B_L1C,
                                    lambda d: d["weights"].update(sha256="0" * 64)))
    w["corrupt"] = str(_package_copy(pkg / "corrupt", MODEL_4B_L1C, _no_sha, weights=b"\x00garbage" * 100))

    def pickled(d: dict) -> None:
        d["weights"] = {"file": "module.pt", "format": "state_dict"}

    shutil.copy(inp / "module.pt", pkg / "module.pt")
    w["pickle_pkg"] = _pickle_package(pkg, pickled)
    (pkg / "badjson").mkdir()
    (pkg / "badjson" / "model.json").write_text("{not json")
    w["badjson"] = str(pkg / "badjson")
    with zipfile.ZipFile(pkg / "empty.drpk", "w") as z:
        z.writestr("readme.txt", "no model here")
    w["empty_drpk"] = str(pkg / "empty.drpk")
    ro = root / "ro"
    ro.mkdir()
    w["ro"] = ro
    return w


def _pickle_package(pkg: Path, edit: Callable[[dict], None]) -> str:
    """A copy of the 4-band package whose weights are a whole pickled module (it needs the user's trust)."""
    import json

    folder = pkg / "pickled"
    folder.mkdir()
    description = json.loads((MODEL_4B_L1C / "model.json").read_text())
    edit(description)
    (folder / "model.json").write_text(json.dumps(description))
    shutil.copy(pkg / "module.pt", folder / "module.pt")
    return str(folder)


def fit_signed_model(w: dict) -> None:
    """A 6-band k-means model saved (and signed) by Cluster pixels, for Apply a saved model."""
    from analysis_scene import run

    model = w["in"] / "kmeans.joblib"
    run("cluster_pixels", {"INPUT": w["r6"], "N_CLUSTERS": 3, "SAMPLE_SIZE": 500, "OUTPUT": str(w["in"] / "k.tif"),
                           "OUTPUT_MODEL": str(model)})
    w["kmeans"] = str(model)


@pytest.fixture(scope="session")
def world(tmp_path_factory, qgis_app):
    """The inputs of every case; the signing secret and the archive cache in the session's own folders, and a
    folder no one may write in (the immutable flag holds for root too)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    saved = {k: os.environ.get(k) for k in ("DEEPRASTER_CONFIG_DIR", "DEEPRASTER_CACHE_DIR")}
    os.environ["DEEPRASTER_CONFIG_DIR"] = str(root / "config")
    os.environ["DEEPRASTER_CACHE_DIR"] = str(root / "cache")
    w = build_world(root)
    fit_signed_model(w)
    if subprocess.run(["chattr", "+i", str(w["ro"])], capture_output=True).returncode:
        pytest.fail("cannot make a read-only folder here (chattr +i): the matrix needs one")
    w["listing"] = snapshot(w["in"])
    try:
        yield w
    finally:
        subprocess.run(["chattr", "-i", str(w["ro"])], check=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def snapshot(folder: Path) -> dict[str, str]:
    """Name → SHA-256 of every file under ``folder`` (hidden files included)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def check_case(case: Case, w: dict, tmp_path: Path) -> str:
    """Run ``case`` and check everything the matrix promises; returns the message."""
    from analysis_scene import run
    from qgis.core import QgsProcessingException

    out = tmp_path / "out"
    out.mkdir()
    if case.prepare:
        case.prepare(out)
    params = case.params(w, out)
    if case.keep_older:
        for key, value in params.items():
            path = Path(value) if key.startswith("OUTPUT") and isinstance(value, str) else None
            if path and path.parent == out and not path.exists():
                path.write_bytes(f"older {key}".encode())
    before = snapshot(out)
    with pytest.raises(QgsProcessingException) as caught:
        run(case.alg, params)
    message = str(caught.value)
    print(f"{case.id}: {message}")  # shown with -s: the matrix's messages, to read
    assert "Traceback" not in message and 'File "' not in message, message
    for pattern in (case.what, *case.extra):
        assert re.search(pattern, message, re.I | re.S), f"{pattern!r} not in: {message}"
    assert re.search(HOW, message, re.I), f"the message does not say what to do: {message}"
    assert snapshot(out) == before, "the output folder changed"
    assert snapshot(w["in"]) == w["listing"], "an input changed"
    assert not list(w["ro"].iterdir())
    return message
