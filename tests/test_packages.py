"""Model packages: the format and its schema, validation messages, safe loading, creation round trips and
inspection. Archives and Esri .emd/.dlpk import: test_packages_esri.py."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from deepraster.models.create import PackageRequest, create_package
from deepraster.models.description import parse_description
from deepraster.models.errors import ModelPackageError
from deepraster.models.inspect import inspect_model, report_html
from deepraster.models.loaders import build_empty, build_network, fill_empty, load_model, load_network
from deepraster.models.package import load_package
from deepraster.models.pixel_classification import ClassifyRequest, classify_raster
from deepraster.models.sources import open_model
from deepraster.models.weights import read_state_dict
from helpers import REPO, smooth_field
from osgeo import gdal

SCHEMA = REPO / "models" / "schema" / "model-package-1.0.schema.json"
CORAL_CLASSES = [{"value": 0, "name": "other", "color": "#000000"}, {"value": 1, "name": "coral", "color": "#ff7f50"}]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Archives extract into a per-test cache, so tests never share or leave extracted packages."""
    monkeypatch.setenv("DEEPRASTER_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def coral_unet() -> torch.nn.Module:
    """A U-Net like the coral script's (smp Unet resnet18, 3 bands, 1 sigmoid output), fixed seed."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    return smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=1).eval()


def coral_request(weights: Path, output: Path, **kwargs) -> PackageRequest:
    return PackageRequest(weights=weights, output=output, name="coral", bands=["B04", "B03", "B02"],
                          classes=CORAL_CLASSES, license="CC-BY-4.0", activation="sigmoid", value_scale=1e-4,
                          mean=[0.1, 0.1, 0.1], std=[0.05, 0.05, 0.05], **kwargs)


def ukis_description(model_6b_l1c: Path) -> dict:
    return json.loads((model_6b_l1c / "model.json").read_text())


# ---------------------------------------------------------------- format, schema, validation


def test_schema_accepts_zoo_packages_and_rejects_broken_ones(model_6b_l1c, model_4b_l1c):
    """The JSON Schema is valid draft 7, accepts the zoo packages and rejects what the Python validator rejects."""
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    for folder in (model_6b_l1c, model_4b_l1c):
        jsonschema.validate(json.loads((folder / "model.json").read_text()), schema)
    broken = ukis_description(model_6b_l1c)
    broken["weights"]["file"] = "../../etc/passwd"
    broken["classes"][0]["color"] = "green"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    with pytest.raises(ModelPackageError):
        parse_description(broken, model_6b_l1c)


def test_validation_lists_every_problem_with_its_path(model_6b_l1c):
    raw = ukis_description(model_6b_l1c)
    raw["input"]["normalization"]["std"] = [1.0, 2.0]
    raw["inference"]["activation"] = "relu"
    raw["classes"][1]["value"] = 0
    del raw["architecture"]["encoder"]
    raw["format_version"] = "2.0"
    with pytest.raises(ModelPackageError) as info:
        parse_description(raw, model_6b_l1c)
    message = str(info.value)
    for expected in ("$.input.normalization.std: expected 6 numbers", "$.inference.activation: expected one of",
                     "$.classes[1].value: value 0 is used by another class", "$.architecture.encoder: missing",
                     "$.format_version: this plugin reads format 1.0; found '2.0': update the plugin"):
        assert expected in message


@pytest.mark.parametrize("text", ["{", "[]", "\"just a string\"", "\xff\xfe"])
def test_malformed_json(tmp_path, text):
    (tmp_path / "model.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ModelPackageError, match="JSON|object"):
        load_package(tmp_path)


def test_reserved_task_and_missing_weights(model_6b_l1c, tmp_path):
    raw = ukis_description(model_6b_l1c)
    raw["task"] = "regression"
    with pytest.raises(ModelPackageError, match="reserved"):
        parse_description(raw, model_6b_l1c)
    (tmp_path / "model.json").write_text(json.dumps(ukis_description(model_6b_l1c)))
    with pytest.raises(ModelPackageError, match="weights.safetensors .* is missing"):
        load_package(tmp_path)


# ---------------------------------------------------------------- safe loading


class _Payload:
    """A pickle payload with a visible, harmless side effect: it creates a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_with_payload_is_refused_without_trust(tmp_path):
    """A pickle that would run code on load is refused (and its code does not run) unless the user trusts it."""
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "model.pth"
    with open(evil, "wb") as f:
        pickle.dump({"weights": _Payload(marker)}, f)
    request = coral_request(evil, tmp_path / "out.drpk", arch="Unet", encoder="resnet18")
    with pytest.raises(ModelPackageError, match="runs whatever code it contains"):
        create_package(request)
    assert not marker.exists()
    description = {"format": "deepraster-model-package", "format_version": "1.0", "name": "evil", "license": "x",
                   "task": "pixel_classification",
                   "architecture": {"framework": "smp", "arch": "Unet", "encoder": "resnet18", "in_channels": 3,
                                    "out_channels": 1},
                   "weights": {"file": "model.pth", "format": "pickled_module"},
                   "input": {"bands": ["r", "g", "b"]}, "inference": {"tile_size": 64, "activation": "sigmoid"},
                   "classes": CORAL_CLASSES}
    (tmp_path / "model.json").write_text(json.dumps(description))
    with pytest.raises(ModelPackageError, match="was not loaded"):
        load_model(load_package(tmp_path))
    assert not marker.exists()


def test_state_dict_of_wrong_model_names_keys(tmp_path, coral_unet):
    torch.save(coral_unet.state_dict(), tmp_path / "w.pth")
    request = coral_request(tmp_path / "w.pth", tmp_path / "pkg", arch="Unet", encoder="resnet34")
    with pytest.raises(ModelPackageError, match=r"do not fit smp Unet resnet34 .*(missing|unexpected)"):
        create_package(request)
    assert not (tmp_path / "pkg").exists()


def test_meta_device_construction_gives_the_same_network(model_6b_l1c):
    """load_model builds the network on the meta device and gives it the weights: same tensors (values, dtypes,
    strides, real memory) and bit-identical outputs as a network built normally and loaded with load_state_dict."""
    package = load_package(model_6b_l1c)
    state = read_state_dict(package.weights_file, package.weights_format)
    empty = build_empty(lambda: build_network(package.architecture))
    assert empty is not None and fill_empty(empty, state)  # the meta path is the one taken for this package
    fast = load_model(package)
    slow = build_network(package.architecture)
    slow.load_state_dict(state, strict=True)
    slow.eval()
    assert not any(t.is_meta for t in (*fast.parameters(), *fast.buffers()))
    assert all(isinstance(p, torch.nn.Parameter) for p in fast.parameters())
    for (key, a), (other, b) in zip(fast.state_dict().items(), slow.state_dict().items(), strict=True):
        assert key == other and a.dtype == b.dtype and a.stride() == b.stride() and torch.equal(a, b), key
    x = torch.randn(2, 6, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(fast(x), slow(x))


def test_network_with_tensors_outside_its_state_dict_is_built_normally():
    """A non-persistent buffer or a plain tensor attribute exists only as its constructor computes it: such a
    network is built normally (not left on the meta device); float16 weights are converted as load_state_dict does."""

    class Net(torch.nn.Module):
        def __init__(self, buffer: bool):
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 2, 1)
            if buffer:
                self.register_buffer("index", torch.arange(4), persistent=False)
            else:
                self.scale = torch.full((1,), 2.0)

    for buffer in (True, False):
        state = {k: v.half() for k, v in Net(buffer).state_dict().items()}
        assert not fill_empty(build_empty(lambda buffer=buffer: Net(buffer)), state)
        net = load_network(lambda buffer=buffer: Net(buffer), state)
        assert torch.equal(net.index, torch.arange(4)) if buffer else torch.equal(net.scale, torch.full((1,), 2.0))
        assert net.conv.weight.dtype == torch.float32 and torch.equal(net.conv.weight, state["conv.weight"].float())

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 2, 1)

    state = {k: v.half() for k, v in Plain().state_dict().items()}
    net = load_network(Plain, state)  # the meta path
    assert net.conv.weight.dtype == torch.float32 and torch.equal(net.conv.weight, state["conv.weight"].float())


# ---------------------------------------------------------------- creation round trips


def run_single_tile(package_path: Path, raster: Path, tmp_path: Path, trusted: bool = False) -> np.ndarray:
    """Probability raster of a run whose single tile covers the whole 256×256 raster (no blending involved)."""
    out = tmp_path / f"p_{package_path.name}.tif"
    classify_raster(ClassifyRequest(raster=str(raster), package=open_model(package_path), probabilities_path=str(out),
                                    bands=(1, 2, 3), device="cpu", trusted=trusted))
    return gdal.Open(str(out)).ReadAsArray()


@pytest.mark.parametrize("source", ["pickled", "safetensors", "torchscript"])
def test_round_trip_equals_original_module(tmp_path, make_raster, coral_unet, source):
    """A package made from the coral-script style pickled U-Net, a safetensors file or TorchScript holds bit-identical
    weights and gives the same probabilities (to float32 rounding) as the original module run directly."""
    from safetensors.torch import save_file

    weights = tmp_path / {"pickled": "coral.pth", "safetensors": "w.safetensors", "torchscript": "m.pt"}[source]
    if source == "pickled":
        torch.save(coral_unet, weights)
        extra = {"trusted": True}
    elif source == "safetensors":
        save_file(coral_unet.state_dict(), str(weights))
        extra = {"arch": "Unet", "encoder": "resnet18"}
    else:
        torch.jit.trace(coral_unet, torch.randn(1, 3, 64, 64)).save(str(weights))
        extra = {"out_channels": 1}
    package = create_package(coral_request(weights, tmp_path / f"{source}.drpk", tile_size=256, overlap=0, **extra))
    assert package.suffix == ".drpk" and package.is_file()
    raster = make_raster("r.tif", smooth_field(3, 256, 256))
    ours = run_single_tile(package, raster, tmp_path)
    x = gdal.Open(str(raster)).ReadAsArray().astype(np.float32) * 1e-4
    x = (x - 0.1) / 0.05
    with torch.inference_mode():
        direct = torch.sigmoid(coral_unet(torch.from_numpy(x[None]))).numpy()[0, 0]  # one band: GDAL gives 2-D
    np.testing.assert_allclose(ours, direct, atol=1e-5)  # float32 rounding: normalisation order, batching
    if source != "torchscript":
        package_net = load_model(open_model(package), trusted=True)
        for key, value in coral_unet.state_dict().items():  # the weights themselves are bit-identical
            assert torch.equal(package_net.state_dict()[key], value), key


def test_normalisation_computed_from_a_raster(tmp_path, make_raster, coral_unet):
    """Mean/std computed from a bounded sample of valid pixels (nodata excluded) match the true statistics."""
    torch.save(coral_unet, tmp_path / "coral.pth")
    data = smooth_field(3, 300, 200)
    data[:, :50] = 0
    raster = make_raster("s.tif", data, nodata=0)
    request = coral_request(tmp_path / "coral.pth", tmp_path / "pkg", trusted=True)
    request.mean = request.std = None
    request.normalization_raster, request.normalization_bands, request.sample_size = raster, (3, 2, 1), 20_000
    package = load_package(create_package(request))
    valid = data[[2, 1, 0], 50:].reshape(3, -1).astype(np.float64) * 1e-4
    np.testing.assert_allclose(package.normalization.a, valid.mean(axis=1), rtol=0.02)
    np.testing.assert_allclose(package.normalization.b, valid.std(axis=1), rtol=0.05)
    assert package.raw["input"]["normalization"]["computed_from"]["sample_size"] == 20_000


# ---------------------------------------------------------------- inspection


def test_inspect_reports(tmp_path, model_6b_l1c):
    report = inspect_model(model_6b_l1c)
    assert report["status"] == "valid" and report["checksum"]["status"] == "ok"
    assert report["dry_run"]["output_shape"] == [1, 3, 64, 64]
    assert report["dry_run"]["parameters"] > 19_000_000
    page = report_html(report)
    assert "background:#" in page and "cloud shadow" in page and "Apache-2.0" in page
    broken = tmp_path / "broken"
    shutil.copytree(model_6b_l1c, broken)
    with open(broken / "weights.safetensors", "r+b") as f:
        f.write(b"garbage")
    assert inspect_model(broken)["checksum"]["status"] == "mismatch"
    raw = ukis_description(model_6b_l1c)
    raw["classes"] = raw["classes"][:2]
    (broken / "model.json").write_text(json.dumps(raw))
    report = inspect_model(broken)
    assert report["status"] == "invalid" and any("$.classes" in p for p in report["problems"])


def test_inspect_and_create_algorithms(qgis_app, tmp_path, coral_unet, make_raster):
    """Both algorithms through processing.run: create a .drpk from a trusted pickle, inspect it, classify with it."""
    import processing

    torch.save(coral_unet, tmp_path / "coral.pth")
    raster = make_raster("r.tif", smooth_field(3, 96, 128), descriptions=("B04", "B03", "B02"))
    created = processing.run("deepraster:create_package", {
        "WEIGHTS": str(tmp_path / "coral.pth"), "TRUST": True, "BANDS": "B04, B03, B02",
        "CLASSES": [0, "other", "#000000", 1, "coral", "#ff7f50"], "ACTIVATION": 1, "VALUE_SCALE": 0.0001,
        "NORMALIZATION": 1, "NORM_RASTER": str(raster), "NORM_BANDS": [1, 2, 3], "TILE_SIZE": 64, "OVERLAP": 16,
        "NAME": "coral test", "LICENSE": "CC-BY-4.0", "OUTPUT": str(tmp_path / "coral.drpk")})
    assert Path(created["OUTPUT"]).is_file()
    inspected = processing.run("deepraster:inspect_package", {
        "MODEL": created["OUTPUT"], "OUTPUT_HTML": str(tmp_path / "r.html"), "OUTPUT_JSON": str(tmp_path / "r.json")})
    assert inspected["STATUS"] == "valid"
    assert json.loads((tmp_path / "r.json").read_text())["package"]["architecture"]["encoder"] == "resnet18"
    classified = processing.run("deepraster:classify_pixels", {
        "INPUT": str(raster), "MODEL": created["OUTPUT"], "OUTPUT_CLASSES": str(tmp_path / "c.tif")})
    assert set(np.unique(gdal.Open(classified["OUTPUT_CLASSES"]).ReadAsArray())) <= {0, 1}
