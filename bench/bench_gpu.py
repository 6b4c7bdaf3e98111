"""The GPU path proven (issue 15, item 4): on one CUDA GPU, in under 8 minutes, with the real ukis-csmask 6-band
package on the real Sentinel-2 10 m scene and a 6144 × 3072 mosaic of it.

1. **Agreement.** The scene classified on the CPU (PyTorch, float32) is the reference; the same pipeline on CUDA in
   float32, float16 and bfloat16 (and on ONNX Runtime's CUDA provider when this onnxruntime has it) must give the
   same class on ≥ 99.9 % (float32) / ≥ 99.5 % (half precisions) of the pixels.
2. **Throughput.** On the mosaic, every tile of the run's own grid is read and normalised into memory; the
   predictor (the engine's model step: host → GPU, network, activation, GPU → host) is timed over all of them at
   each batch size of the sweep, and so is the bare network on inputs already on the GPU (the ceiling). At the
   best batch size the whole pipeline runs (read, predict, blend, write class and probability GeoTIFFs), model
   loaded and warmed up beforehand. Efficiency = end-to-end tile Mpx/s ÷ predictor tile Mpx/s (target ≥ 0.9).
3. **Memory.** Peak GPU memory (``torch.cuda.max_memory_allocated``) of every sweep step and pipeline run.

JSON goes to ``bench/results/gpu.json``, a short table to stdout. Without a CUDA device it exits with status 2 and
says why. ``--device cpu`` runs the same steps on the CPU on a small window (a smoke test, about a minute on 2
cores; its figures mean nothing); ``--dry-run`` only checks the inputs and prints the plan.

Run: ``make bench-gpu`` or ``.venv/bin/python bench/bench_gpu.py [--device cpu] [--dry-run]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import _gpu
import numpy as np

_common.ensure_plugin_path()

SCENE = _common.ROOT / ".data/s2/s2_l1c_10m.tif"
PACKAGE = _common.ROOT / ".data/models/ukis-csmask-6b-l1c"
MOSAIC = _common.DATA / "s2_l1c_10m_mosaic_6144x3072.tif"
PRECISIONS = ("float32", "float16", "bfloat16")
BATCHES = (1, 2, 4, 8, 16, 32, 64)
SMOKE_WINDOW = (0, 0, 448, 256)
"""Columns, rows (offset and size, px) of the scene that ``--device cpu`` runs on: 3 × 2 tiles of 256 px."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default; cuda:N for another GPU) or cpu (smoke)")
    parser.add_argument("--dry-run", action="store_true", help="check inputs and print the plan, run nothing")
    parser.add_argument("--scene", type=Path, default=SCENE)
    parser.add_argument("--package", type=Path, default=PACKAGE)
    parser.add_argument("--mosaic", type=Path, default=MOSAIC, help="built from the scene when missing")
    parser.add_argument("--precisions", help="comma-separated, e.g. fp32,fp16,bf16 (default: all three on a GPU, "
                        "float32 in a smoke run)")
    parser.add_argument("--batches", help=f"batch sizes of the sweep (default {','.join(map(str, BATCHES))}; 1,2 "
                        "in a smoke run)")
    parser.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip later steps after this many seconds")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/gpu.json (gpu_smoke.json)")
    args = parser.parse_args(argv)
    args.smoke = not args.device.startswith("cuda")
    from deepraster.tiling.predictor import resolve_precision

    precisions = args.precisions or ("float32" if args.smoke else ",".join(PRECISIONS))
    args.precisions = list(dict.fromkeys(resolve_precision(p) for p in precisions.split(",") if p.strip()))
    args.batches = [int(b) for b in (args.batches or ("1,2" if args.smoke else ",".join(map(str, BATCHES))))
                    .split(",") if b.strip()]
    args.out = args.out or _common.RESULTS / ("gpu_smoke.json" if args.smoke else "gpu.json")
    return args


def environment(device: str) -> dict[str, Any]:
    """Versions and the GPU, for the JSON."""
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                            "cuda_available": torch.cuda.is_available(), "device": device}
    if torch.cuda.is_available() and device.startswith("cuda"):
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    compute_capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version(),
                    bf16_supported=torch.cuda.is_bf16_supported(), gpu_count=torch.cuda.device_count())
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        info.update(onnxruntime=onnxruntime.__version__, ort_providers=onnxruntime.get_available_providers())
    return info


def region_of(args: argparse.Namespace):
    """The smoke window of the scene, or None (the whole raster)."""
    from deepraster.tiling.window import Window

    return Window(*SMOKE_WINDOW) if args.smoke else None


def torch_predictor(package, device: str, precision: str):
    """The engine's PyTorch predictor for ``package`` on ``device`` in ``precision``."""
    from deepraster.models.loaders import load_model
    from deepraster.tiling.predictor import TorchPredictor, resolve_device

    return TorchPredictor(load_model(package), resolve_device(device), package.activation, precision=precision)


def run_pipeline(package, raster: Path, work: Path, name: str, device: str, precision: str, batch: int,
                 runtime: str = "torch", region=None) -> dict[str, Any]:
    """One classification through the engine (plan → predictor → run writing class and probability rasters),
    with the model loaded and warmed up before the timed run. Returns times (s), throughput and the class array."""
    from deepraster.models.pixel_classification import (
        ClassifyRequest,
        classification_run,
        plan_classification,
        plan_predictor,
    )
    from deepraster.tiling.callbacks import Callbacks
    from osgeo import gdal

    start = time.perf_counter()
    request = ClassifyRequest(raster=str(raster), package=package, classes_path=str(work / f"{name}_classes.tif"),
                              probabilities_path=str(work / f"{name}_probabilities.tif"), batch_size=batch,
                              device=device, runtime=runtime, region=region)
    plan = plan_classification(request, Callbacks())
    if runtime == "torch":
        predictor, where = torch_predictor(package, device, precision), f"PyTorch {device} {precision}"
    else:
        predictor, where = plan_predictor(plan)
    predictor(np.zeros((batch, len(plan.bands), plan.tile, plan.tile), np.float32))  # warm-up (kernels, cuDNN)
    ready = time.perf_counter()
    with _gpu.peak_gpu_memory(device if runtime == "torch" else "cpu") as peak:
        stats = classification_run(plan, predictor, Callbacks()).run()
    done = time.perf_counter()
    classes = gdal.Open(request.classes_path).ReadAsArray()
    region_px = plan.region.width * plan.region.height
    return {"where": where, "precision": precision, "batch": batch, "tile": plan.tile, "overlap": plan.overlap,
            "tiles": stats.tiles_predicted, "prepare_s": round(ready - start, 2), "run_s": round(done - ready, 3),
            "predict_s": round(stats.predict_seconds, 3),
            "e2e_mpx_s": _gpu.mpx_per_s(stats.tiles_predicted, plan.tile, done - ready),
            "raster_mpx_s": round(region_px / (done - ready) / 1e6, 3), **peak,
            "class_percent": _gpu.class_fractions(classes, [c.value for c in package.classes]), "_classes": classes,
            "_plan": plan}


def read_tiles(plan, raster: Path) -> np.ndarray:
    """Every tile of ``plan``'s grid holding a valid pixel, read and normalised as the engine does: (N, bands,
    tile, tile) float32."""
    from bench_pipeline import build_batches

    request = dataclasses.replace(plan.request, raster=str(raster), grid_offset=plan.offset, batch_size=1)
    batches, _ = build_batches(request)
    return np.concatenate(batches)


def agreement_step(args, package, work: Path, results: dict[str, Any]) -> None:
    """The scene on the CPU, then on the device in each precision (and ONNX Runtime): class agreement."""
    region = region_of(args)
    reference = run_pipeline(package, args.scene, work, "cpu_reference", "cpu", "float32", 1, region=region)
    results["cpu_reference"] = {k: v for k, v in reference.items() if not k.startswith("_")}
    runs = [(p, "torch", p) for p in args.precisions]
    if not args.no_onnx and _ort_device(args.device):
        runs.append(("onnxruntime", "onnxruntime", "float32"))
    for name, runtime, precision in runs:
        if over_budget(args, results, f"agreement {name}"):
            return
        run = run_pipeline(package, args.scene, work, name, args.device, precision, 4, runtime, region)
        agreement = _gpu.class_agreement(run.pop("_classes"), reference["_classes"])
        run.pop("_plan")
        results["agreement"][name] = {**run, **agreement}
        print(f"  agreement {name}: {agreement['agreement_percent']:.3f} % ({run['where']})", flush=True)


def throughput_step(args, package, work: Path, results: dict[str, Any]) -> None:
    """Batch sweep of the predictor and the bare network on the mosaic's tiles, then the pipeline at the best
    batch size: efficiency and peak GPU memory, for each precision (and ONNX Runtime)."""
    raster = args.scene if args.smoke else ensure_mosaic(args.mosaic)
    region = region_of(args)
    names = [*args.precisions]
    if not args.no_onnx and _ort_device(args.device):
        names.append("onnxruntime")
    tiles = None
    for name in names:
        if over_budget(args, results, f"throughput {name}"):
            return
        if name == "onnxruntime":
            make = lambda: _onnx_predictor(package, args.device)  # noqa: E731
            model = dtype = None
        else:
            make = lambda n=name: torch_predictor(package, args.device, n)  # noqa: E731
            model, dtype = _bare_model(package, args.device, name)
        if tiles is None:
            plan = _plan_only(package, raster, work, args.device, region)
            tiles = read_tiles(plan, raster)
            results["throughput_tiles"] = {"raster": str(raster), "tiles": len(tiles), "tile": plan.tile,
                                           "overlap": plan.overlap}
        # ONNX Runtime's GPU memory is not PyTorch's: not measured ("cpu" here)
        sweep = _gpu.sweep_batches(make, tiles, args.batches, "cpu" if model is None else args.device, model, dtype)
        del model
        best = _gpu.best_batch(sweep)
        run = run_pipeline(package, raster, work, f"mosaic_{name}", args.device,
                           "float32" if name == "onnxruntime" else name, best["batch"],
                           "onnxruntime" if name == "onnxruntime" else "torch", region)
        run.pop("_classes")
        run.pop("_plan")
        entry = {"sweep": sweep, "best_batch": best["batch"], "raw_mpx_s": best["predictor_mpx_s"],
                 "model_mpx_s": best.get("model_mpx_s"), "e2e_mpx_s": run["e2e_mpx_s"],
                 "efficiency": round(run["e2e_mpx_s"] / best["predictor_mpx_s"], 3),
                 "efficiency_vs_model_only": round(run["e2e_mpx_s"] / best["model_mpx_s"], 3)
                 if best.get("model_mpx_s") else None,
                 "peak_gpu_mib": run["peak_gpu_mib"], "pipeline": run}
        results["throughput"][name] = entry
        print(f"  throughput {name}: best batch {best['batch']}, raw {entry['raw_mpx_s']} Mpx/s, e2e "
              f"{entry['e2e_mpx_s']} Mpx/s, efficiency {entry['efficiency']}", flush=True)


def _plan_only(package, raster: Path, work: Path, device: str, region):
    """The plan of a PyTorch run over ``raster`` (its grid and normalisation), nothing run."""
    from deepraster.models.pixel_classification import ClassifyRequest, plan_classification
    from deepraster.tiling.callbacks import Callbacks

    request = ClassifyRequest(raster=str(raster), package=package, classes_path=str(work / "plan.tif"),
                              device=device, runtime="torch", region=region)
    return plan_classification(request, Callbacks())


def _bare_model(package, device: str, precision: str):
    """The network on ``device`` in ``precision`` (as the predictor holds it) and that dtype."""
    from deepraster.models.loaders import load_model
    from deepraster.tiling.predictor import compute_dtype, resolve_device

    torch_device = resolve_device(device)
    dtype = compute_dtype(precision, torch_device)
    return load_model(package).to(torch_device).eval().to(dtype), dtype


def _ort_device(device: str) -> bool:
    """Whether ONNX Runtime runs in this benchmark: its CUDA provider on a GPU, its CPU provider in a smoke run."""
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    import onnxruntime

    return not device.startswith("cuda") or "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def _onnx_predictor(package, device: str):
    from deepraster.models.onnx_export import ensure_onnx
    from deepraster.tiling.onnx_predictor import OnnxPredictor, resolve_providers

    return OnnxPredictor(ensure_onnx(package), resolve_providers(device), package.activation)


def ensure_mosaic(path: Path) -> Path:
    """The 6144 × 3072 mosaic of the scene (made by bench_runtimes.py's recipe when missing)."""
    if not path.exists():
        from bench_runtimes import build_mosaic

        build_mosaic(path)
    return path


def over_budget(args, results: dict[str, Any], step: str) -> bool:
    """True (and the step noted as skipped) when the run has used its time budget."""
    if time.perf_counter() - results["_start"] <= args.budget_s:
        return False
    results["skipped"].append(step)
    print(f"  skipped {step}: over the {args.budget_s:.0f} s budget", flush=True)
    return True


def dry_run(args) -> int:
    """Check the inputs and print what a run would do."""
    import torch

    problems = [f"missing {p}" for p in (args.scene, args.package) if not Path(p).exists()]
    plan = {"device": args.device, "smoke": args.smoke, "precisions": args.precisions, "batches": args.batches,
            "scene": str(args.scene), "package": str(args.package),
            "mosaic": str(args.mosaic) + ("" if args.mosaic.exists() else " (to be built)"),
            "onnxruntime": not args.no_onnx and _ort_device(args.device), "out": str(args.out),
            "cuda_available": torch.cuda.is_available(), "problems": problems}
    print(json.dumps(plan, indent=2))
    if not args.smoke and not torch.cuda.is_available():
        print(_gpu.no_cuda_message(torch), file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        return dry_run(args)
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print(_gpu.no_cuda_message(torch), file=sys.stderr)
        return 2
    from deepraster.models.package import load_package

    package = load_package(args.package)
    results: dict[str, Any] = {"benchmark": "gpu", "smoke": args.smoke, "machine": _common.machine_info(),
                               "environment": environment(args.device), "package": package.name,
                               "scene": str(args.scene), "agreement": {}, "throughput": {}, "skipped": [],
                               "_start": time.perf_counter()}
    print(f"bench-gpu on {results['environment'].get('gpu', args.device)}: {package.name}", flush=True)
    if not args.no_onnx and not _ort_device(args.device):
        results["skipped"].append("onnxruntime: not installed, or without CUDAExecutionProvider (onnxruntime-gpu)")
    with tempfile.TemporaryDirectory(prefix="bench-gpu-", dir=_common.DATA if _common.DATA.exists() else None) as tmp:
        agreement_step(args, package, Path(tmp), results)
        throughput_step(args, package, Path(tmp), results)
    results["bench_seconds"] = round(time.perf_counter() - results.pop("_start"), 1)
    results["verdicts"] = _gpu.verdicts(results)
    _common.write_json(args.out, results)
    print(_gpu.format_table(results))
    print(f"{results['bench_seconds']:.0f} s -> {args.out}")
    failed = [k for k, v in results["verdicts"].items() if k.startswith("agreement") and v["met"] is False]
    if failed:
        print(f"bench-gpu: class agreement below its bar: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
