"""Reading Esri model definitions (``.emd`` JSON) and deep learning packages (``.dlpk``: a zip of the model folder).

The .emd keys are mapped onto a Deep Raster description (see docs/model-package.md, "Esri import"): ModelType →
task, ImageHeight/ImageWidth → tile size, ModelPadding → overlap (twice the padding), ExtractBands and Bands → input
bands, NormalizationStats (or ArcGIS's ImageNet default) → normalisation, Classes → classes, ModelFile → weights.
What can run here runs: TorchScript files; state dicts of a segmentation-models-pytorch architecture named by
ModelConfiguration / ModelParameters (ImageClassification); and arcgis.learn's Faster R-CNN on RGB with its default
resnet50 backbone (ObjectDetection), which is torchvision's ``fasterrcnn_resnet50_fpn`` resizing tiles by 1.5 inside.
What needs ArcGIS (arcgis.learn's own networks, arcpy, a Python raster function) fails with a message naming the
missing piece.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .archive import extract_archive
from .description import parse_description
from .errors import ModelPackageError
from .spec import ModelPackage
from .weights import is_torchscript, read_state_dict

# ArcGIS's normalisation when an .emd has no NormalizationStats (arcgis.learn _inferencing/util.py): ImageNet, 0–255.
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)
SUPPORTED_MODEL_TYPES = {"ImageClassification": "pixel_classification", "ObjectDetection": "object_detection"}
ESRI_VALUE_SCALE = 1.0
"""An Esri package's input value scale: raster values go to its normalisation unscaled."""
STANDARD_INFERENCE_FUNCTIONS = {"ObjectDetection": "ArcGISObjectDetector.py"}
"""Esri's own inference function per model type: it applies the network as it was trained and needs no code here."""
ARCGIS_FASTER_RCNN_SCALE = 1.5
"""arcgis.learn's Faster R-CNN is built with ``min_size = 1.5 × chip`` and ``max_size = 2 × chip``: a square tile of
the chip size is enlarged 1.5 times inside the network."""


def load_emd(path: str | Path) -> ModelPackage:
    """A package from an .emd file and the weights beside it."""
    path = Path(path)
    try:
        emd = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelPackageError(f"{path} is not a readable Esri model definition (JSON): {exc}") from exc
    if not isinstance(emd, dict):
        raise ModelPackageError(f"{path} must hold a JSON object.")
    description = emd_to_description(emd, path.parent, path.name)
    return parse_description(description, path.parent)


def load_dlpk(path: str | Path) -> ModelPackage:
    """A package from an Esri .dlpk archive (extracted safely into the cache; the .emd sits at its root)."""
    folder = extract_archive(path)
    emds = sorted(folder.glob("*.emd"))
    if not emds:
        nested = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.emd"))
        where = f" (found only nested ones: {', '.join(nested)})" if nested else ""
        raise ModelPackageError(f"{path} has no .emd model definition at its root{where}.")
    if len(emds) > 1:
        raise ModelPackageError(f"{path} has several .emd files at its root ({', '.join(p.name for p in emds)}).")
    return load_emd(emds[0])


def _require(emd: dict[str, Any], key: str, source: str) -> Any:
    if key not in emd:
        raise ModelPackageError(f"{source}: the Esri model definition has no {key!r}.")
    return emd[key]


def _model_type(emd: dict[str, Any], source: str) -> str:
    model_type = emd.get("ModelType", "ImageClassification")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelPackageError(f"{source}: ModelType {model_type!r} is not supported yet; Deep Raster runs Esri pixel "
                                "classification models (ModelType ImageClassification) and object detectors "
                                "(ModelType ObjectDetection).")
    inference = emd.get("InferenceFunction")
    standard = STANDARD_INFERENCE_FUNCTIONS.get(model_type)
    if inference and not str(inference).startswith("[Functions]System") and str(inference) != standard:
        raise ModelPackageError(
            f"{source}: the model needs its own ArcGIS Python raster function {inference!r} (code written for ArcGIS "
            "Pro's raster engine and arcpy), which cannot run in QGIS. Export the network as TorchScript, or give "
            "its weights as a state dict of a segmentation-models-pytorch architecture."
        )
    return SUPPORTED_MODEL_TYPES[model_type]


def _weights(emd: dict[str, Any], folder: Path, source: str) -> tuple[str, str]:
    model_file = str(_require(emd, "ModelFile", source)).replace("\\", "/")
    while model_file.startswith("./"):
        model_file = model_file[2:]
    if not (folder / model_file).is_file():
        raise ModelPackageError(f"{source}: the weights file {model_file!r} named by ModelFile is missing.")
    framework = str(emd.get("Framework", ""))
    suffix = Path(model_file).suffix.lower()
    if framework.lower() in ("tensorflow", "keras", "cntk") or suffix in (".pb", ".h5", ".model", ".onnx"):
        raise ModelPackageError(
            f"{source}: the model is a {framework or suffix} model; Deep Raster runs PyTorch models (TorchScript or "
            "state dicts). Convert it to PyTorch first."
        )
    if suffix == ".safetensors":
        return model_file, "safetensors"
    return model_file, "torchscript" if is_torchscript(folder / model_file) else "state_dict"


def _smp_architecture(emd: dict[str, Any], source: str) -> tuple[str, str]:
    """(smp architecture, encoder) from ModelConfiguration and ModelParameters.backbone; explains arcgis.learn."""
    import segmentation_models_pytorch as smp

    config = emd.get("ModelConfiguration")
    config = config.get("Name", "") if isinstance(config, dict) else str(config or "")
    params = emd.get("ModelParameters") or {}
    backbone = str(params.get("backbone") or params.get("encoder") or "")
    if backbone.startswith("timm:"):
        backbone = "tu-" + backbone[len("timm:"):]
    archs = {cls.__name__.lower(): cls.__name__ for cls in smp._MODEL_ARCHITECTURES}
    arch = archs.get(config.lower())
    if arch is None or config.startswith("_") or "arcgis" in str(emd.get("Framework", "")).lower():
        raise ModelPackageError(
            f"{source}: ModelConfiguration {config!r} is an arcgis.learn network (fastai), whose weights need "
            "arcgis.learn, which only runs in ArcGIS. Export the model to TorchScript from arcgis.learn, or name a "
            f"segmentation-models-pytorch architecture ({', '.join(sorted(archs.values()))}) in ModelConfiguration "
            "with ModelParameters.backbone."
        )
    if not backbone:
        raise ModelPackageError(f"{source}: ModelParameters.backbone (the encoder name) is missing.")
    return arch, backbone


def _torchvision_detector(emd: dict[str, Any], source: str, n_classes: int) -> dict[str, Any]:
    """The torchvision architecture of an arcgis.learn Faster R-CNN (RGB, resnet50); other detectors are explained."""
    name = str(emd.get("ModelName") or "")
    configuration = str(emd.get("ModelFileConfigurationClass") or "")
    if name != "FasterRCNN" and configuration != "MyFasterRCNN":
        found = name or configuration or str(emd.get("ModelConfiguration") or "an unnamed network")
        raise ModelPackageError(
            f"{source}: the detector {found!r} is an arcgis.learn network that only arcgis.learn can build. Deep "
            "Raster imports arcgis.learn's FasterRCNN (resnet50 backbone) and TorchScript detectors: export the "
            "model to TorchScript, or train a Faster R-CNN."
        )
    backbone = str((emd.get("ModelParameters") or {}).get("backbone") or "resnet50")
    if backbone != "resnet50":
        raise ModelPackageError(
            f"{source}: arcgis.learn's FasterRCNN with backbone {backbone!r} is built from arcgis.learn's own parts; "
            "only the default resnet50 backbone is torchvision's fasterrcnn_resnet50_fpn, which Deep Raster builds."
        )
    if emd.get("IsMultispectral"):
        raise ModelPackageError(
            f"{source}: multispectral arcgis.learn detectors are not imported: their input normalisation "
            "(NormalizationStats and the detector's own mean/std) has not been verified against ArcGIS. RGB "
            "FasterRCNN models and TorchScript detectors are imported."
        )
    return {"framework": "torchvision", "arch": "fasterrcnn_resnet50_fpn", "in_channels": 3,
            "out_channels": n_classes, "input_scale": ARCGIS_FASTER_RCNN_SCALE}


def _bands(emd: dict[str, Any], source: str) -> list[dict[str, Any]]:
    extract = emd.get("ExtractBands", [0, 1, 2])
    names = emd.get("Bands") if emd.get("IsMultispectral") else None
    if not isinstance(extract, list) or not extract:
        raise ModelPackageError(f"{source}: ExtractBands must be a non-empty list of band indexes or names.")
    bands = []
    for i, item in enumerate(extract):
        if isinstance(item, str):
            bands.append({"name": item})
        elif isinstance(item, int) and not isinstance(item, bool) and item >= 0:
            name = names[item] if isinstance(names, list) and item < len(names) else f"band {item + 1}"
            bands.append({"name": str(name), "default_band": item + 1})
        else:
            raise ModelPackageError(f"{source}: ExtractBands[{i}] = {item!r} is neither a 0-based index nor a name.")
    return bands


def _normalization(emd: dict[str, Any], source: str) -> dict[str, Any]:
    """Mean/std in raster units; NormalizationStats lists are indexed by the training raster's band index."""
    extract = emd.get("ExtractBands", [0, 1, 2])
    if not all(isinstance(b, int) for b in extract):
        extract = list(range(len(extract)))  # band names: the statistics are listed in ExtractBands order
    stats = emd.get("NormalizationStats")
    n = len(extract)
    if not stats:
        if n != 3:
            raise ModelPackageError(f"{source}: NormalizationStats are missing for a {n}-band model; ArcGIS's "
                                    "default (ImageNet, 0–255) only applies to 3 bands.")
        return {"type": "mean_std", "mean": list(IMAGENET_MEAN_255), "std": list(IMAGENET_STD_255)}
    try:
        idx = [int(b) for b in extract]
        lo = [float(stats["band_min_values"][i]) for i in idx]
        hi = [float(stats["band_max_values"][i]) for i in idx]
        s_mean = [float(stats["scaled_mean_values"][i]) for i in idx]
        s_std = [float(stats["scaled_std_values"][i]) for i in idx]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ModelPackageError(f"{source}: NormalizationStats lack per-band min/max and scaled mean/std for "
                                f"ExtractBands {extract} ({exc}).") from exc
    # ((x − min)/(max − min) − scaled_mean)/scaled_std  ==  (x − mean')/std'
    mean = [a + m * (b - a) for a, b, m in zip(lo, hi, s_mean, strict=True)]
    std = [s * (b - a) for a, b, s in zip(lo, hi, s_std, strict=True)]
    return {"type": "mean_std", "mean": mean, "std": std}


def _classes(emd: dict[str, Any], source: str) -> list[dict[str, Any]]:
    classes = []
    for i, item in enumerate(_require(emd, "Classes", source)):
        try:
            r, g, b = (int(c) for c in item.get("Color", [128, 128, 128])[:3])
            value = item["Value"] if "Value" in item else item["ClassValue"]  # older .emd files: ClassValue/ClassName
            name = item.get("Name", item.get("ClassName", value))
            classes.append({"value": int(value), "name": str(name), "color": f"#{r:02x}{g:02x}{b:02x}"})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelPackageError(f"{source}: Classes[{i}] needs Value, Name and Color [r, g, b] ({exc}).") from exc
    return classes


def _output_channels(folder: Path, weights: str, fmt: str) -> int | None:
    """Output channels of an smp segmentation head in a state dict (None when it cannot be read)."""
    state = read_state_dict(folder / weights, fmt)
    head = state.get("segmentation_head.0.weight")
    return int(head.shape[0]) if head is not None else None


def emd_tiling(emd: dict[str, Any], source: str = "model.emd") -> tuple[int, int]:
    """The tile size and overlap (px) of an Esri model definition: its square chip (``ImageHeight``, default 256)
    and twice its ``ModelPadding`` (default: a quarter of the tile)."""
    tile = int(emd.get("ImageHeight", 256))
    if int(emd.get("ImageWidth", tile)) != tile:
        raise ModelPackageError(f"{source}: only square tiles are supported (ImageHeight {tile}, "
                                f"ImageWidth {emd.get('ImageWidth')}).")
    padding = emd.get("ModelPadding")
    return tile, 2 * int(padding) if padding is not None else tile // 4


def emd_to_description(emd: dict[str, Any], folder: Path, source: str = "model.emd") -> dict[str, Any]:
    """A Deep Raster description dict equivalent to an Esri model definition (weights resolved in ``folder``)."""
    task = _model_type(emd, source)
    weights, fmt = _weights(emd, folder, source)
    bands = _bands(emd, source)
    classes = _classes(emd, source)
    tile, overlap = emd_tiling(emd, source)
    if fmt == "torchscript":
        architecture = {"framework": "torchscript", "in_channels": len(bands), "out_channels": len(classes)}
    elif task == "object_detection":
        architecture = _torchvision_detector(emd, source, len(classes))
    else:
        arch, encoder = _smp_architecture(emd, source)
        out = _output_channels(folder, weights, fmt) or len(classes)
        architecture = {"framework": "smp", "arch": arch, "encoder": encoder, "in_channels": len(bands),
                        "out_channels": out}
        if out == len(classes) + 1 and 0 not in {c["value"] for c in classes}:  # arcgis.learn: channel 0 = background
            classes = [{"value": 0, "name": "background", "color": "#000000"}, *classes]
    return {
        "format": "deepraster-model-package",
        "format_version": "1.0",
        "name": str(emd.get("ModelName") or Path(source).stem),
        "version": str(emd.get("Version", "")),
        "description": f"Imported from the Esri model definition {source}.",
        "license": str(emd.get("License", "unknown (not stated in the Esri model definition)")),
        "task": task,
        "architecture": architecture,
        "weights": {"file": weights, "format": fmt},
        "input": {"bands": bands, "value_scale": ESRI_VALUE_SCALE, "value_offset": 0.0,
                  **({"expected_range": emd["DataRange"]} if isinstance(emd.get("DataRange"), list) else {}),
                  "normalization": _normalization(emd, source)},
        "inference": {"tile_size": tile, "overlap": overlap,
                      "size_divisor": 32 if fmt != "torchscript" and task == "pixel_classification" else 1,
                      "activation": "softmax", **({"batch_size": int(emd["BatchSize"])} if "BatchSize" in emd else {})},
        "classes": classes,
        "provenance": {"source": source, "esri_model_definition": {k: v for k, v in emd.items()
                                                                   if k != "NormalizationStats"}},
    }
