"""The GPU path (issue 15, item 4): the precision option of the predictor, the helpers of ``bench/bench_gpu.py`` and
the script itself. Everything here runs on the CPU except the tests marked ``cuda``, which are skipped with a reason
where PyTorch sees no CUDA device."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO

sys.path.insert(0, str(REPO / "bench"))
import _gpu  # noqa: E402
from deepraster.tiling.errors import DeepRasterError  # noqa: E402
from deepraster.tiling.predictor import TorchPredictor, compute_dtype, resolve_precision  # noqa: E402

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch sees no CUDA GPU on this machine")
CPU = torch.device("cpu")


def tiny_model(bands: int = 3, classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(bands, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, classes, 1))


def tiles(n: int = 6, bands: int = 3, size: int = 32) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, bands, size, size)).astype(np.float32)


@pytest.mark.parametrize(("name", "half", "expected"), [
    (None, False, "float32"), (None, True, "float16"), ("", True, "float16"), ("fp32", True, "float32"),
    ("FP16", False, "float16"), ("half", False, "float16"), ("bf16", False, "bfloat16"),
    (" bfloat16 ", True, "bfloat16")])
def test_precision_names(name, half, expected):
    assert resolve_precision(name, half) == expected


def test_unknown_precision_is_refused():
    with pytest.raises(DeepRasterError, match="Unknown precision 'int4'.*float32, float16 or bfloat16"):
        resolve_precision("int4")


@pytest.mark.parametrize("precision", ["float32", "float16", "bfloat16"])
def test_the_cpu_computes_in_float32_whatever_the_precision(precision):
    """As ``half`` always was, a reduced precision applies on CUDA only: on the CPU nothing changes."""
    assert compute_dtype(precision, CPU) == torch.float32
    reference = TorchPredictor(tiny_model(), CPU)(tiles())
    predictor = TorchPredictor(tiny_model(), CPU, "softmax", precision=precision)
    assert predictor.dtype == torch.float32 and not predictor.half
    assert next(predictor.model.parameters()).dtype == torch.float32
    np.testing.assert_array_equal(predictor(tiles()), reference)


def test_existing_callers_are_unchanged():
    """The positional ``half`` argument still works and is still ignored on the CPU."""
    predictor = TorchPredictor(tiny_model(), CPU, "sigmoid", True)
    assert predictor.half is False and predictor.dtype == torch.float32
    out = predictor(tiles(2))
    assert out.shape == (2, 3, 32, 32) and out.dtype == np.float32 and (out >= 0).all() and (out <= 1).all()


def test_class_agreement_counts_pixels_valid_in_both():
    a = np.array([[0, 1, 2, 255], [1, 1, 1, 1]], np.uint8)
    b = np.array([[0, 1, 1, 0], [1, 1, 1, 255]], np.uint8)
    result = _gpu.class_agreement(a, b)
    assert result["pixels_compared"] == 6
    assert result["agreement_percent"] == pytest.approx(100 * 5 / 6, abs=1e-3)
    assert result["validity_differs_percent"] == 25.0
    assert _gpu.class_fractions(a, [0, 1, 2]) == [14.29, 71.43, 14.29]
    with pytest.raises(ValueError, match="different shapes"):
        _gpu.class_agreement(a, b[:1])


def test_batch_sweep_on_a_tiny_case():
    """The sweep times the predictor and the bare network at each batch size and picks the fastest."""
    model = tiny_model()
    rows = _gpu.sweep_batches(lambda: TorchPredictor(tiny_model(), CPU), tiles(8), [1, 4], "cpu", model.eval(),
                              torch.float32)
    assert [r["batch"] for r in rows] == [1, 4]
    for row in rows:
        assert row["predictor_s"] > 0 and row["predictor_mpx_s"] > 0 and row["model_mpx_s"] > 0
        assert row["peak_gpu_mib"] is None  # no GPU: no GPU memory
    assert _gpu.best_batch(rows)["batch"] in (1, 4)
    assert _gpu.best_batch([{"batch": 8, "x": 2.0}, {"batch": 2, "x": 2.0}, {"batch": 1, "x": 1.0}],
                           "x")["batch"] == 2
    with pytest.raises(ValueError, match="no batch size ran"):
        _gpu.best_batch([{"batch": 1, "error": "CUDA out of memory"}])
    assert _gpu.mpx_per_s(10, 256, 1.0) == 0.655 and _gpu.mpx_per_s(1, 256, 0.0) == 0.0


def test_verdicts_and_table():
    results = {"agreement": {"float32": {"precision": "float32", "agreement_percent": 99.95},
                             "float16": {"precision": "float16", "agreement_percent": 99.2}},
               "throughput": {"float16": {"best_batch": 32, "raw_mpx_s": 100.0, "e2e_mpx_s": 95.0,
                                          "efficiency": 0.95, "model_mpx_s": 120.0, "peak_gpu_mib": 2048.0}}}
    verdicts = _gpu.verdicts(results)
    assert verdicts["agreement_float32"] == {"value": 99.95, "bar": 99.9, "met": True}
    assert verdicts["agreement_float16"]["met"] is False and verdicts["agreement_float16"]["bar"] == 99.5
    assert verdicts["efficiency_float16"]["met"] is True
    table = _gpu.format_table(results)
    assert "float16" in table and "2048.000" in table and "agreement_float16: 99.2 (bar 99.5): NOT met" in table
    assert "no CUDA GPU" in _gpu.no_cuda_message(torch)


def bench(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "bench" / "bench_gpu.py"), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def test_dry_run_checks_inputs_and_prints_the_plan():
    proc = bench("--dry-run", "--precisions", "fp16,bf16", "--batches", "8,16")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["precisions"] == ["float16", "bfloat16"] and plan["batches"] == [8, 16] and not plan["problems"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_without_cuda_the_script_stops_with_a_clear_message():
    proc = bench()
    assert proc.returncode == 2
    assert "bench-gpu: no CUDA GPU" in proc.stderr and "--device cpu" in proc.stderr


def test_cpu_smoke_run_goes_through_every_step(tmp_path):
    """``--device cpu`` runs every step of the benchmark on a 448 × 256 px window of the real scene with the real
    package: agreement with the CPU reference, the batch sweep, the pipeline at the best batch, JSON and table."""
    out = tmp_path / "gpu_smoke.json"
    proc = bench("--device", "cpu", "--batches", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["smoke"] is True and not result["skipped"]
    assert result["agreement"]["float32"]["agreement_percent"] == 100.0
    run = result["throughput"]["float32"]
    assert run["best_batch"] == 2 and run["e2e_mpx_s"] > 0 and run["efficiency"] > 0
    assert result["throughput_tiles"]["tiles"] == run["pipeline"]["tiles"]
    assert "agreement_float32: 100.0 (bar 99.9): met" in proc.stdout


@cuda
@pytest.mark.parametrize(("precision", "bar"), [("float16", 99.0), ("bfloat16", 98.0)])
def test_reduced_precision_on_cuda_agrees_with_float32(precision, bar):
    device = torch.device("cuda")
    if precision == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU does not compute in bfloat16")
    reference = TorchPredictor(tiny_model(), device)(tiles(16))
    predictor = TorchPredictor(tiny_model(), device, precision=precision)
    assert predictor.dtype == compute_dtype(precision, device) and next(predictor.model.parameters()).dtype == \
        predictor.dtype
    out = predictor(tiles(16))
    assert out.dtype == np.float32
    agree = 100 * (out.argmax(1) == reference.argmax(1)).mean()
    assert agree >= bar, agree


@cuda
def test_sweep_reports_peak_gpu_memory():
    model = tiny_model().cuda().eval()
    rows = _gpu.sweep_batches(lambda: TorchPredictor(tiny_model(), torch.device("cuda")), tiles(8), [2], "cuda",
                              model, torch.float32)
    assert rows[0]["peak_gpu_mib"] > 0 and rows[0]["model_mpx_s"] > 0
