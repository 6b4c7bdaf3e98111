"""The one weights reader (models/weights.py): a checkpoint loads alike through a model package and as an encoder's
weights, whatever common wrapping it has; pickles are refused in both, TorchScript is recognised, and every failure
is a WeightsError (a ModelPackageError)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from deepraster.models.encoders import timm_encoder
from deepraster.models.errors import EncoderError, ModelPackageError, WeightsError
from deepraster.models.loaders import load_model
from deepraster.models.package import load_package
from deepraster.models.weights import read_state_dict


@pytest.fixture(scope="module")
def resnet() -> dict[str, torch.Tensor]:
    """The state dict of a randomly initialised timm ResNet-18 (3 bands, 1000 classes), fixed seed."""
    torch.manual_seed(0)
    return {k: v.clone() for k, v in timm.create_model("resnet18").state_dict().items()}


def timm_package(folder: Path, weights: str) -> Path:
    """A feature-extraction package of timm resnet18 whose weights file is ``weights`` (a state dict)."""
    (folder / "model.json").write_text(json.dumps({
        "format": "deepraster-model-package", "format_version": "1.0", "name": "toy", "license": "MIT",
        "task": "feature_extraction",
        "architecture": {"framework": "timm", "arch": "resnet18", "in_channels": 3, "out_channels": 1000},
        "weights": {"file": weights, "format": "state_dict"},
        "input": {"bands": ["red", "green", "blue"]},
        "inference": {"tile_size": 64, "overlap": 16, "activation": "none"},
    }))
    return folder


WRAPPINGS = {
    "lightning": lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}, "epoch": 3},
    "dino_teacher": lambda s: {"teacher": {f"backbone.{k}": v for k, v in s.items()}, "student": {}},
    "training_loop": lambda s: {"model_state_dict": {f"net.{k}": v for k, v in s.items()}, "optimizer": {}},
    "nested_prefixes": lambda s: {"model": {f"module.model.{k}": v for k, v in s.items()}},
}


@pytest.mark.parametrize("wrapping", sorted(WRAPPINGS))
def test_wrapped_checkpoint_loads_alike_as_package_and_as_encoder(tmp_path: Path, resnet, wrapping: str) -> None:
    """Each wrapping (nesting key, non-tensor entries, shared key prefixes) is unwrapped by the same rules: the
    package's network and the encoder hold the original tensors exactly. Before the readers were merged, the DINO
    teacher and the nested prefixes failed as a package, and the training-loop checkpoint failed as an encoder."""
    torch.save(WRAPPINGS[wrapping](resnet), tmp_path / "ckpt.pth")
    assert read_state_dict(tmp_path / "ckpt.pth").keys() == resnet.keys()
    net = load_model(load_package(timm_package(tmp_path, "ckpt.pth")))
    for key, value in resnet.items():
        assert torch.equal(net.state_dict()[key], value), key
    module, enc = timm_encoder("resnet18", 3, tmp_path / "ckpt.pth", stride=32)
    own = module.model.state_dict()  # the timm model under the stage wrapper (classifier pruned)
    assert enc.kind == "cnn" and enc.channels == 512
    assert torch.equal(own["conv1.weight"], resnet["conv1.weight"])
    assert torch.equal(own["layer4.1.bn2.running_var"], resnet["layer4.1.bn2.running_var"])


class _Payload:
    """A pickle payload with a visible, harmless side effect: it creates a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_is_refused_alike_as_package_and_as_encoder(tmp_path: Path) -> None:
    """A checkpoint holding arbitrary objects is refused by both paths with the same error type and reason, and
    its code never runs."""
    marker = tmp_path / "payload-ran"
    torch.save({"state_dict": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="runs whatever code it contains") as as_package:
        load_model(load_package(timm_package(tmp_path, "evil.pth")))
    with pytest.raises(WeightsError, match="runs whatever code it contains") as as_encoder:
        timm_encoder("resnet18", 3, tmp_path / "evil.pth")
    assert as_package.value.needs_trust and as_encoder.value.needs_trust
    assert not marker.exists()


def test_torchscript_and_non_weights_are_named(tmp_path: Path) -> None:
    """A TorchScript model given as a state dict, a file of no tensors and a missing file: clear WeightsErrors."""
    torch.jit.trace(torch.nn.Conv2d(3, 3, 1), torch.zeros(1, 3, 4, 4)).save(str(tmp_path / "scripted.pt"))
    with pytest.raises(WeightsError, match="is a whole TorchScript model, not a state dict"):
        read_state_dict(tmp_path / "scripted.pt")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "no_tensors.pth")
    with pytest.raises(WeightsError, match="holds no tensors"):
        read_state_dict(tmp_path / "no_tensors.pth")
    with pytest.raises(WeightsError, match="does not exist"):
        read_state_dict(tmp_path / "missing.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="Cannot read the weights file .*garbage.safetensors"):
        read_state_dict(tmp_path / "garbage.safetensors")


def test_error_hierarchy() -> None:
    """Weights and encoder errors are model errors: one ``except ModelPackageError`` catches every model problem,
    and the older names stay importable where the code imported them from."""
    from deepraster.models import encoders

    assert issubclass(WeightsError, ModelPackageError) and issubclass(EncoderError, ModelPackageError)
    assert encoders.EncoderError is EncoderError
