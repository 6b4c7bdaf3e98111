"""Initial weights of Train segmentation model: a weights file (whole network or encoder only, counts in the log,
nothing matching refused, pickles only when trusted) and input-channel adaptation (the real ukis-csmask 6-band
package on chips with 4 of its bands and one extra band: training runs, the log says what was done per band, the
adapted first convolution answers the kept bands exactly as the original), also through Processing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import recording_feedback, write_raster, write_vector
from test_train_segmentation import SIZE, package_tensors, rect, scene_values

BANDS5 = ("B02", "B03", "B04", "B08", "B05")


@pytest.fixture(scope="module")
def exports(qgis_app, tmp_path_factory) -> dict[int, Path]:
    """Chips of a 5-band scene (B02, B03, B04, B08 and an extra B05 of noise): all 5 bands, and the first 4."""
    import processing

    root = tmp_path_factory.mktemp("init")
    data, _ = scene_values()
    extra = np.random.default_rng(7).integers(500, 900, (1, SIZE, SIZE)).astype(np.uint16)
    raster = write_raster(root / "scene.tif", np.concatenate([data, extra]), descriptions=BANDS5)
    stripes = [rect(c, 0, c + 12, SIZE) for c in range(0, SIZE, 12)]
    labels = write_vector(root / "labels.gpkg", stripes, {"cover": ["water" if i % 2 else "forest"
                                                                    for i in range(len(stripes))]})
    out = {}
    for n in (4, 5):
        out[n] = root / f"chips{n}"
        processing.run("deepraster:export_training_data", {
            "INPUT": str(raster), "LABELS": str(labels), "LABEL_FIELD": "cover", "BANDS": list(range(1, n + 1)),
            "CHIP_SIZE": 32, "BLOCK_SIZE": 960, "VALIDATION_FRACTION": 0.3, "SEED": 3, "OUTPUT": str(out[n])},
            feedback=recording_feedback())
    return out


def unet(classes: int, in_channels: int = 4, encoder: str = "resnet18", seed: int = 11):
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(seed)
    return smp.Unet(encoder, encoder_weights=None, in_channels=in_channels, classes=classes)


def train(chips: Path, out: Path, **extra):
    """A 1-epoch run with a learning rate so small that the weights stay where they started; (result, log lines)."""
    from deepraster.tiling.callbacks import Callbacks
    from deepraster.training.train import TrainRequest, train_segmentation

    lines: list[str] = []
    values = {"epochs": 1, "batch_size": 4, "learning_rate": 1e-12, "device": "cpu", "seed": 5, "patience": 0,
              **extra}
    result = train_segmentation(TrainRequest(chips=chips, output=out, **values),
                                Callbacks(info=lines.append, warning=lines.append))
    return result, lines


def counts(lines: list[str]) -> tuple[int, int, int, int, int]:
    """(loaded, wanted, missing, of another shape, unused) from the log line on the initial weights."""
    line = next(t for t in lines if t.startswith("Initial weights from"))
    found = re.search(r"(\d+) of (\d+) \w+ tensors loaded .* (\d+) missing, (\d+) of another shape; (\d+) tensors",
                      line)
    assert found, line
    return tuple(int(g) for g in found.groups())


def convs(tensors: dict) -> list[str]:
    return [k for k, v in tensors.items() if v.ndim == 4]


def test_whole_network_from_a_state_dict(qgis_app, exports, tmp_path):
    import torch

    net = unet(2)
    torch.save(net.state_dict(), tmp_path / "whole.pt")
    result, lines = train(exports[4], tmp_path / "w.drpk", initial_weights=tmp_path / "whole.pt",
                          initial_part="network")
    wanted = sum(1 for k in net.state_dict() if not k.endswith("num_batches_tracked"))
    assert counts(lines) == (wanted, wanted, 0, 0, 0)
    tuned, original = package_tensors(result.package), {k: v.numpy() for k, v in net.state_dict().items()}
    assert any(k.startswith("decoder.") for k in convs(tuned))
    assert all(np.allclose(tuned[k], original[k], atol=1e-6) for k in convs(tuned))

    torch.save(unet(3).state_dict(), tmp_path / "three.pt")  # another class count: the head keeps its random start
    _, lines = train(exports[4], tmp_path / "h.drpk", initial_weights=tmp_path / "three.pt", initial_part="network")
    assert counts(lines) == (wanted - 2, wanted, 0, 2, 0)
    assert any("another shape segmentation_head.0.weight (3, 16, 3, 3) vs (2, 16, 3, 3)" in t for t in lines)


def test_encoder_only_from_safetensors_with_or_without_the_prefix(qgis_app, exports, tmp_path):
    from safetensors.torch import save_file

    net = unet(3)
    encoder = {k: v.contiguous() for k, v in net.encoder.state_dict().items()}
    save_file(encoder, str(tmp_path / "encoder.safetensors"))  # keys without "encoder."
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "whole.safetensors"))
    wanted = sum(1 for k in encoder if not k.endswith("num_batches_tracked"))
    for name, unused in (("encoder.safetensors", 0), ("whole.safetensors", None)):
        result, lines = train(exports[4], tmp_path / f"{name}.drpk", initial_weights=tmp_path / name)
        loaded, total, missing, other, left = counts(lines)
        assert (loaded, total, missing, other) == (wanted, wanted, 0, 0)
        assert left == unused if unused is not None else left > 0  # the decoder and head of the whole file
        tuned = package_tensors(result.package)
        assert all(np.allclose(tuned[f"encoder.{k}"], encoder[k].numpy(), atol=1e-6)
                   for k in encoder if encoder[k].ndim == 4)


def test_nothing_matching_is_refused_and_pickles_need_trust(qgis_app, exports, tmp_path):
    import torch
    from deepraster.tiling.errors import DeepRasterError

    torch.save(unet(2, encoder="mobilenet_v2").state_dict(), tmp_path / "other.pt")
    before = set(tmp_path.iterdir())
    with pytest.raises(DeepRasterError, match=r"None of the \d+ encoder tensors .* another architecture"):
        train(exports[4], tmp_path / "x.drpk", initial_weights=tmp_path / "other.pt")
    torch.save(unet(2), tmp_path / "module.pt")  # a whole pickled model
    with pytest.raises(DeepRasterError, match="not a plain state dict") as info:
        train(exports[4], tmp_path / "x.drpk", initial_weights=tmp_path / "module.pt", initial_part="network")
    assert "unless you trust" in str(info.value)
    assert set(tmp_path.iterdir()) == before | {tmp_path / "module.pt"}, "a refused run wrote something"
    result, lines = train(exports[4], tmp_path / "t.drpk", initial_weights=tmp_path / "module.pt",
                          initial_part="network", trust_weights=True)
    assert counts(lines)[2:4] == (0, 0) and result.package.is_file()


def test_ukis_package_on_other_bands_adapts_the_first_convolution(qgis_app, exports, tmp_path, model_6b_l1c):
    import torch
    from deepraster.models.sources import open_model

    result, lines = train(exports[5], tmp_path / "z.drpk", initial_package=model_6b_l1c, new_bands="zero")
    log = "\n".join(lines)
    assert "first convolution encoder._conv_stem.weight is adapted from 6 to 5 bands, matched by name." in log
    assert "band B02: pretrained filters of blue." in log and "band B08: pretrained filters of nir." in log
    assert "band B05: new, zero filters" in log and "dropped (not in the chips): swir16, swir22." in log
    assert counts(lines)[2:4] == (0, 0)
    weight = torch.from_numpy(package_tensors(result.package)["encoder._conv_stem.weight"])
    original = torch.from_numpy(package_tensors(model_6b_l1c)["encoder._conv_stem.weight"].astype(np.float32))
    assert weight.shape == (48, 5, 3, 3) and weight[:, 4].abs().max() < 1e-9  # zero, moved by lr 1e-12 at most
    x = torch.randn(2, 5, 16, 16)
    as_before = torch.zeros(2, 6, 16, 16)
    as_before[:, :4] = x[:, :4]  # the dropped bands at their mean (0 after normalisation)
    torch.testing.assert_close(torch.nn.functional.conv2d(x, weight), torch.nn.functional.conv2d(as_before, original),
                               atol=1e-5, rtol=1e-5)
    package, source = open_model(result.package), open_model(model_6b_l1c)
    assert package.band_names == list(BANDS5) and package.value_scale == source.value_scale
    assert package.normalization.a[:4] == source.normalization.a[:4]
    chip_mean = json.loads((exports[5] / "manifest.json").read_text())["statistics"]["mean"][4]
    assert package.normalization.a[4] == pytest.approx(chip_mean * source.value_scale + source.value_offset)


def test_mean_initialisation_keeps_the_activation_magnitude():
    """timm's rule: with the mean of the pretrained filters, every filter × pretrained ÷ chip bands, an input whose
    bands are equal gives the pretrained response (here 6 → 5 bands, 4 kept, 1 new)."""
    import torch
    from deepraster.models.spec import BandSpec
    from deepraster.training.adapt import BandPlan, adapt_first_conv, plan_by_name, plan_by_position

    weight = torch.randn(8, 6, 3, 3)
    bands = [BandSpec(n) for n in ("blue", "green", "red", "nir", "swir16", "swir22")]
    plan = plan_by_name(bands, ["nir", "red", "green", "blue", "dem"], "test")
    assert plan.sources == (3, 2, 1, 0, None) and plan.dropped == (4, 5)
    adapted = adapt_first_conv(weight, plan, "mean")
    torch.testing.assert_close(adapted[:, 0], weight[:, 3] * 6 / 5)
    torch.testing.assert_close(adapted[:, 4], weight.mean(dim=1) * 6 / 5)
    every_new = adapt_first_conv(weight, BandPlan(("",) * 5, plan.pretrained_bands, (None,) * 5, False), "mean")
    ones = torch.ones(1, 6, 7, 7)
    torch.testing.assert_close(torch.nn.functional.conv2d(ones[:, :5], every_new),
                               torch.nn.functional.conv2d(ones, weight), atol=1e-5, rtol=1e-5)
    assert plan_by_position(3, ["a", "b", "c", "d"]).sources == (0, 1, 2, None)


def test_processing_with_a_weights_file_and_refusals(qgis_app, exports, tmp_path):
    import processing
    import torch
    from qgis.core import QgsProcessingException
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in unet(2).encoder.state_dict().items()}, str(tmp_path / "enc.safetensors"))
    feedback = recording_feedback()
    result = processing.run("deepraster:train_segmentation", {
        "CHIPS": str(exports[5]), "INITIAL": "weights file: encoder only",
        "INITIAL_WEIGHTS": str(tmp_path / "enc.safetensors"), "NEW_BANDS": 1, "EPOCHS": 1, "BATCH_SIZE": 4,
        "DEVICE": "cpu", "OUTPUT": str(tmp_path / "p.drpk"), "OUTPUT_REPORT": str(tmp_path / "p.html")},
        feedback=feedback)
    log = "\n".join(feedback.messages)
    assert "adapted from 4 to 5 bands, matched by position (the weights name no bands)" in log
    assert "band B05: new, zero filters" in log and Path(result["OUTPUT"]).is_file()
    torch.save(unet(2), tmp_path / "module.pt")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(QgsProcessingException, match="not a plain state dict"):
        processing.run("deepraster:train_segmentation", {
            "CHIPS": str(exports[4]), "INITIAL": 2, "INITIAL_WEIGHTS": str(tmp_path / "module.pt"),
            "OUTPUT": str(out / "m.drpk"), "OUTPUT_REPORT": str(out / "m.html")}, feedback=recording_feedback())
    assert not list(out.iterdir())
