"""OpenVINO against ONNX Runtime on the package's own ONNX graph: is it clearly faster on this CPU? (issue 16)

The ukis-csmask 6-band U-Net's ONNX export (the one the ONNX path runs, made on first use and cached) is run on one
256 × 256 tile of the real 10 m scene, normalised as the package says, by:

* ``onnxruntime``: ``InferenceSession`` on the CPU provider, ``--threads`` intra-op threads (as our path sets it);
* ``openvino_f32``: OpenVINO's CPU plugin, same threads, latency hint, ``INFERENCE_PRECISION_HINT`` f32;
* ``openvino_default``: OpenVINO's own default precision (bf16 on CPUs with AVX-512 BF16 or AMX).

The runtimes alternate within each repeat (a loaded machine slows all alike); medians of the forward seconds, the
ratio ONNX Runtime ÷ OpenVINO (> 1: OpenVINO faster), and class agreement / max |Δ logit| against ONNX Runtime.
OpenVINO is not a dependency: install it into the venv first (``.venv/bin/pip install openvino "numpy<2"``).
Run: ``.venv/bin/python bench/bench_openvino.py [--repeats 15] [--threads 2]``; JSON on stdout and in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _common
import numpy as np

SCENE = _common.ROOT / ".data/s2/s2_l1c_10m.tif"
PACKAGE = _common.ROOT / ".data/models/ukis-csmask-6b-l1c"
TILE = 256


def tile_input() -> np.ndarray:
    """The scene's top-left 256 px tile in the package's bands, scaled and normalised: (1, 6, 256, 256) float32."""
    from deepraster.models.bands import match_bands_by_name
    from deepraster.models.package import load_package
    from osgeo import gdal

    package = load_package(PACKAGE)
    ds = gdal.Open(str(SCENE))
    bands = match_bands_by_name(package.bands, [ds.GetRasterBand(i + 1).GetDescription()
                                                for i in range(ds.RasterCount)])
    x = np.stack([ds.GetRasterBand(b).ReadAsArray(0, 0, TILE, TILE) for b in bands]).astype(np.float32)
    x = x * package.value_scale + package.value_offset
    shift, divisor = package.normalization.shift_and_divisor(len(bands))
    return ((x - np.asarray(shift, np.float32)[:, None, None]) / np.asarray(divisor, np.float32)[:, None, None])[None]


def onnx_path() -> Path:
    """The cached ONNX export of the package (made on first use, as a run does)."""
    from deepraster.models.package import load_package
    from deepraster.models.runtimes import onnx_file

    path = onnx_file(load_package(PACKAGE), "onnxruntime")
    if path is None:
        sys.exit("bench_openvino: the package has no ONNX export (ONNX Runtime missing?)")
    return Path(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=_common.RESULTS / "openvino.json")
    args = parser.parse_args()
    _common.ensure_plugin_path()
    try:
        import openvino
    except ImportError:
        sys.exit('bench_openvino: OpenVINO is not installed: .venv/bin/pip install openvino "numpy<2"')
    import onnxruntime

    x, path = tile_input(), onnx_path()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    core = openvino.Core()
    base = {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY"}
    requests = {"openvino_f32": core.compile_model(str(path), "CPU", {**base, "INFERENCE_PRECISION_HINT": "f32"}),
                "openvino_default": core.compile_model(str(path), "CPU", base)}
    infer = {name: model.create_infer_request() for name, model in requests.items()}
    run = {"onnxruntime": lambda: session.run(None, {feed: x})[0],
           **{name: (lambda r=request: r.infer({0: x})[0]) for name, request in infer.items()}}
    reference = run["onnxruntime"]()
    seconds: dict[str, list[float]] = {name: [] for name in run}
    agreement = {}
    for name, forward in run.items():
        out = forward()  # warm-up, and the comparison with ONNX Runtime
        agreement[name] = {"class_agreement": float((out.argmax(1) == reference.argmax(1)).mean()),
                           "max_abs_logit_difference": float(np.abs(out - reference).max())}
    for _ in range(args.repeats):
        for name, forward in run.items():
            start = time.perf_counter()
            forward()
            seconds[name].append(time.perf_counter() - start)
    medians = {name: _common.median(values) for name, values in seconds.items()}
    result = {
        "benchmark": "openvino", "machine": _common.machine_info(), "code": _common.code_version(),
        "openvino": openvino.__version__, "onnxruntime": onnxruntime.__version__, "threads": args.threads,
        "tile": TILE, "repeats": args.repeats, "load_average_end": _common.load_average(),
        "forward_seconds_median": medians,
        "onnxruntime_over": {name: medians["onnxruntime"] / medians[name] for name in requests},
        "against_onnxruntime": agreement,
    }
    _common.write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
