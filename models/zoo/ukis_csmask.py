"""Zoo recipe: the ukis-csmask 1.0.0 cloud / cloud-shadow U-Nets as Deep Raster model packages.

ukis-csmask (PyPI, Apache-2.0, German Aerospace Center (DLR)) ships four trained
``segmentation_models_pytorch.Unet`` models with an ``efficientnet-b4`` encoder as ONNX files with float16
weights: 4 bands (blue, green, red, nir) or 6 bands (+ swir16, swir22), for Level-1C top-of-atmosphere or
Level-2A surface reflectance. Classes: 0 clear, 1 cloud, 2 cloud shadow. The ONNX graph outputs logits; ukis
applies a softmax over channels afterwards.

The ONNX initializer names are smp state-dict keys prefixed with ``model.``. This recipe reads them with the
``onnx`` package (no onnxruntime needed), converts the float16 values losslessly to float32, fills the keys the
ONNX export dropped because smp never uses them (``encoder._conv_head.*``, ``encoder._bn1.*``,
``*.num_batches_tracked``) with zeros so the file is deterministic and ``load_state_dict(strict=True)`` works, and
writes a package with :func:`deepraster.models.package.save_package`, plus the Apache-2.0 licence text of the
wheel as ``LICENSE.ukis-csmask``.

The data package is installed with ``pip install --no-deps ukis-csmask==1.0.0`` and is located without being
imported. The module itself imports neither QGIS nor torch at import time.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...tiling.checksums import sha256_of
from ..package import save_package

if TYPE_CHECKING:
    import numpy as np
    import torch

#: The ukis-csmask release these packages are converted from.
UKIS_VERSION = "1.0.0"
#: Variants: ``<bands>_<product level>``.
VARIANTS = ("4b_l1c", "4b_l2a", "6b_l1c", "6b_l2a")
#: Keys smp's model has but the ONNX export dropped (never used in ``forward``): prefixes, and a suffix.
UNUSED_KEY_PREFIXES = ("encoder._conv_head.", "encoder._bn1.")
UNUSED_KEY_SUFFIX = ".num_batches_tracked"
ENCODER = "efficientnet-b4"
N_CLASSES = 3
#: Training conditions: ukis-csmask trains and runs the model on 256 px tiles (``target_size``; its ONNX graph is
#: fixed at 256 x 256, the PyTorch network takes any multiple of 32), at about 10-30 m (Sentinel-2, Landsat).
TRAINING_PIXEL_SIZE_M = (10, 30)
#: Default inference tiling (px): the training tile (``tile_h`` below), never larger (640 px tiles called 28.6 %
#: cloud shadow on the 10 m scene where CSmask says 13.2 %), placed as ukis-csmask places it: ``CSmask`` tiles with
#: 20 % overlap (a stride of int(0.8 x 256) = 204 px, so 52 px overlap) over the image padded by int(0.2 x 256) = 51 px
#: before its top and left edges. At 10 m the model's output depends strongly on where the tiles fall (CSmask agrees
#: with itself shifted by half a tile on 86.6 % / 91.6 % of the pixels, 4 / 6 bands), and of the overlaps measured
#: (32-128 px, with and without an edge margin) only this placement kept both packages within 2 points of CSmask
#: per class on both scenes (10 m, 6 bands: 5-7 points more cloud with every other grid); on it the class rasters
#: agree on >= 99.5 % of the pixels. bench/bench_fidelity.py; figures in the README.
INFERENCE_OVERLAP = 52
EDGE_MARGIN = 51

#: Band name (as in the ukis JSON) -> (Sentinel-2 aliases, nominal Sentinel-2 central wavelength in nm).
BANDS: dict[str, tuple[list[str], int]] = {
    "blue": (["B02", "B2"], 490),
    "green": (["B03", "B3"], 560),
    "red": (["B04", "B4"], 665),
    "nir": (["B08", "B8"], 842),
    "swir16": (["B11"], 1610),
    "swir22": (["B12"], 2190),
}

CLASSES = [
    {"value": 0, "name": "clear", "color": "#3a9d23"},
    {"value": 1, "name": "cloud", "color": "#26a4e3"},
    {"value": 2, "name": "cloud shadow", "color": "#4b3f8f"},
]

HOMEPAGE = "https://github.com/dlr-eoc/ukis-csmask"
PYPI_URL = f"https://pypi.org/project/ukis-csmask/{UKIS_VERSION}/"
PAPERS = [
    "Wieland, M.; Li, Y.; Martinis, S. (2019): Multi-sensor cloud and cloud shadow segmentation with a "
    "convolutional neural network. Remote Sensing of Environment 230, 1-12. "
    "https://doi.org/10.1016/j.rse.2019.05.022",
    "Wieland, M.; Fichtner, F.; Martinis, S. (2022): UKIS-CSMASK: A Python package for multi-sensor cloud and "
    "cloud shadow segmentation. Int. Arch. Photogramm. Remote Sens. Spatial Inf. Sci. XLIII-B3-2022, 217-222. "
    "https://doi.org/10.5194/isprs-archives-XLIII-B3-2022-217-2022",
]
ATTRIBUTION = (
    f"Model: ukis-csmask {UKIS_VERSION} (c) 2020 German Aerospace Center (DLR), German Remote Sensing Data Center, "
    f"licensed under the Apache License 2.0 (see LICENSE.ukis-csmask; {HOMEPAGE}). "
    "Converted from ONNX to a PyTorch state dict without changing the weights. "
    "Please cite: " + "; ".join(PAPERS)
)
TRAINING_DATA = (
    "SPARCS and CloudSEN12+ reference data plus additional custom samples (Sentinel-2 and Landsat), "
    "Level-1C images with compiled Level-2A counterparts (ukis-csmask 1.0.0 README)"
)


def ukis_package_dir() -> Path:
    """Folder of the installed ``ukis_csmask`` package, found without importing it."""
    spec = importlib.util.find_spec("ukis_csmask")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"ukis-csmask is not installed: pip install --no-deps ukis-csmask=={UKIS_VERSION} (see DATA.md)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def ukis_license_file() -> Path:
    """The Apache-2.0 ``LICENSE`` file in the installed ukis-csmask dist-info folder."""
    dist = importlib.metadata.distribution("ukis-csmask")
    if dist.version != UKIS_VERSION:
        raise RuntimeError(f"ukis-csmask {dist.version} is installed; this recipe needs {UKIS_VERSION}")
    for f in dist.files or []:
        if Path(str(f)).name == "LICENSE" and ".dist-info" in str(f):
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    raise FileNotFoundError("LICENSE file of ukis-csmask not found in its dist-info folder")


def _check_variant(variant: str) -> tuple[int, str]:
    """Return (number of input bands, product level) for a variant name like ``"6b_l1c"``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown ukis-csmask variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    bands, level = variant.split("_")
    return int(bands[:-1]), level


def read_onnx_weights(onnx_file: Path) -> dict[str, np.ndarray]:
    """Read the ONNX initializers as ``{smp state-dict key: array}`` (the ``model.`` prefix removed).

    Values keep their stored dtype (float16 for ukis-csmask 1.0.0).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_file))
    weights: dict[str, np.ndarray] = {}
    for init in model.graph.initializer:
        if not init.name.startswith("model."):
            raise ValueError(f"{onnx_file.name}: unexpected initializer {init.name!r} (no 'model.' prefix)")
        weights[init.name[len("model.") :]] = numpy_helper.to_array(init)
    return weights


def build_state_dict(variant: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Build the complete smp ``Unet`` state dict for ``variant`` and return it with the ukis JSON metadata.

    float16 ONNX values are converted to the model's float32 exactly (every float16 is a float32); keys smp
    has but never uses are zeros. Raises ``ValueError`` when the ONNX weights do not fit the architecture.
    """
    import segmentation_models_pytorch as smp
    import torch

    in_channels, _level = _check_variant(variant)
    folder = ukis_package_dir()
    onnx_file = folder / f"model_{variant}.onnx"
    meta = json.loads((folder / f"model_{variant}.json").read_text(encoding="utf-8"))
    if meta["data"]["in_channels"] != in_channels or meta["data"]["classes"] != N_CLASSES:
        raise ValueError(f"{onnx_file.name}: JSON metadata does not describe a {in_channels}-band 3-class model")
    if meta["model"]["encoder_name"] != ENCODER or meta["model"]["decoder_name"] != "unet":
        raise ValueError(f"{onnx_file.name}: not an smp Unet with a {ENCODER} encoder")

    net = smp.Unet(ENCODER, encoder_weights=None, in_channels=in_channels, classes=N_CLASSES)
    reference = net.state_dict()
    loaded = {key: torch.from_numpy(value.copy()) for key, value in read_onnx_weights(onnx_file).items()}

    state: dict[str, torch.Tensor] = {}
    for key, value in loaded.items():
        if key not in reference:
            raise ValueError(f"{onnx_file.name}: unexpected key {key!r}")
        ref = reference[key]
        if tuple(value.shape) != tuple(ref.shape):
            raise ValueError(f"{onnx_file.name}: {key} has shape {tuple(value.shape)}, smp expects {tuple(ref.shape)}")
        state[key] = value.to(ref.dtype)
    # The ONNX values are float16; the float32 copy must hold exactly the same numbers.
    for key, value in loaded.items():
        if value.dtype == torch.float16 and not torch.equal(state[key].to(torch.float16), value):
            raise ValueError(f"{onnx_file.name}: {key} changed in the float16 -> float32 conversion")

    missing = [key for key in reference if key not in state]
    not_unused = [k for k in missing if not (k.startswith(UNUSED_KEY_PREFIXES) or k.endswith(UNUSED_KEY_SUFFIX))]
    if not_unused:
        raise ValueError(f"{onnx_file.name}: weights missing for keys smp uses: {not_unused[:5]}")
    for key in missing:
        state[key] = torch.zeros_like(reference[key])

    ordered = {key: state[key].contiguous() for key in reference}
    result = net.load_state_dict(ordered, strict=True)
    if result.missing_keys or result.unexpected_keys:  # strict=True raises first; kept as a guard
        raise ValueError(f"{onnx_file.name}: state dict does not match smp Unet")
    return ordered, meta


def build_description(variant: str, meta: Mapping[str, Any], onnx_sha256: str) -> dict[str, Any]:
    """The ``model.json`` description (docs/model-package.md) for ``variant``; ``weights`` is filled on save.

    Units: the model takes reflectance (0-1), i.e. Sentinel-2 digital numbers x 0.0001; pixel sizes in metres.
    """
    in_channels, level = _check_variant(variant)
    stats = meta["data"]["dataset_statistics"]
    band_names = list(stats["band_names"])
    mean, std = (list(map(float, row)) for row in stats["img"])
    if len(band_names) != in_channels or len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"model_{variant}.json: band statistics do not have {in_channels} entries")
    unknown = [b for b in band_names if b not in BANDS]
    if unknown:
        raise ValueError(f"model_{variant}.json: unknown band names {unknown}")
    tile_h, tile_w = (int(v) for v in meta["data"]["target_size"])
    if tile_h != tile_w:
        raise ValueError(f"model_{variant}.json: non-square target_size {meta['data']['target_size']}")

    reflectance = "top-of-atmosphere" if level == "l1c" else "surface"
    band_text = ", ".join(band_names)
    name = f"ukis-csmask-{variant.replace('_', '-')}"
    return {
        "format": "deepraster-model-package",
        "format_version": "1.0",
        "name": name,
        "version": UKIS_VERSION,
        "description": (
            f"Cloud and cloud-shadow segmentation of Sentinel-2 / Landsat {reflectance} reflectance "
            f"(Level-{level[1:].upper()}), {in_channels} bands ({band_text}); best at about 30 m pixels. "
            "U-Net (EfficientNet-B4 encoder) from ukis-csmask."
        ),
        "authors": ["German Aerospace Center (DLR)"],
        "license": "Apache-2.0",
        "attribution": ATTRIBUTION,
        "task": "pixel_classification",
        "architecture": {
            "framework": "smp",
            "arch": "Unet",
            "encoder": ENCODER,
            "in_channels": in_channels,
            "out_channels": N_CLASSES,
        },
        "weights": {},
        "input": {
            "bands": [
                {"name": band, "aliases": [*BANDS[band][0], band], "wavelength_nm": BANDS[band][1]}
                for band in band_names
            ],
            "value_scale": 0.0001,
            "value_offset": 0.0,
            "expected_range": [0.0, 1.0],
            "normalization": {"type": "mean_std", "mean": mean, "std": std},
            "resolution_m": {"min": 10, "max": 60, "recommended": 30},
        },
        "inference": {"tile_size": tile_h, "overlap": INFERENCE_OVERLAP, "edge_margin": EDGE_MARGIN,
                      "size_divisor": 32, "activation": "softmax"},
        "training": {"tile_size": tile_h, "pixel_size_m": list(TRAINING_PIXEL_SIZE_M), "value_range": [0.0, 1.0]},
        "classes": [dict(c) for c in CLASSES],
        "provenance": {
            "source": f"PyPI ukis-csmask {UKIS_VERSION} ({PYPI_URL}), file ukis_csmask/model_{variant}.onnx "
            f"with ukis_csmask/model_{variant}.json",
            "source_file": f"ukis_csmask/model_{variant}.onnx",
            "source_sha256": onnx_sha256,
            "homepage": HOMEPAGE,
            "model_version": meta["model"]["version"],
            "training_tile_size": tile_h,
            "product_level": level.upper(),
            "converted_by": (
                "Deep Raster models/zoo/ukis_csmask.py: ONNX initializers (float16) converted losslessly to a "
                "float32 segmentation-models-pytorch Unet state dict; keys smp does not use "
                "(encoder._conv_head.*, encoder._bn1.*, *.num_batches_tracked) set to zeros. The ONNX graph "
                "outputs logits; softmax over channels gives the class probabilities as in ukis-csmask. "
                f"Inference tiles {tile_h} px as in training, {INFERENCE_OVERLAP} px overlap, the grid starting "
                f"{EDGE_MARGIN} px before the top and left edges (reflection-padded): the tile placement of "
                "ukis-csmask's CSmask (20 % overlap), chosen by agreement with CSmask on 10 m and 30 m scenes."
            ),
            "training_data": TRAINING_DATA,
            "training_loss": meta["model"].get("loss_fn"),
            "encoder_pretraining": meta["model"].get("encoder_weights"),
            "class_weights": meta["data"].get("class_weights"),
            "class_pixel_counts": stats.get("cnt_classes"),
            "references": list(PAPERS),
        },
    }


def build_ukis_csmask_package(variant: str, out_dir: Path) -> Path:
    """Write the model package for ``variant`` (``"4b_l1c"``, ``"4b_l2a"``, ``"6b_l1c"`` or ``"6b_l2a"``).

    ``out_dir`` is the package folder (created when missing): it receives ``weights.safetensors``,
    ``model.json`` and ``LICENSE.ukis-csmask``. Returns the folder.
    """
    _check_variant(variant)
    out_dir = Path(out_dir)
    state, meta = build_state_dict(variant)
    description = build_description(variant, meta, sha256_of(ukis_package_dir() / f"model_{variant}.onnx"))
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ukis_license_file(), out_dir / "LICENSE.ukis-csmask")
    return Path(save_package(out_dir, description, state))
