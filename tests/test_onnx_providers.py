"""Choosing the runtime and ONNX Runtime's execution providers, the memory check of concurrent calls, and
importing onnxruntime with its usage telemetry off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from deepraster.models.runtimes import choose_runtime
from deepraster.tiling.errors import DeepRasterError
from deepraster.tiling.onnx_predictor import cuda_provider_shipped, resolve_providers
from deepraster.tiling.onnx_session import import_onnxruntime


def test_choosing_the_cpu_provider_does_not_import_onnxruntime():
    """``auto`` and ``cpu`` resolve to the CPU provider without importing onnxruntime where the installed package
    has no CUDA provider (the import is left to the session's thread)."""
    if cuda_provider_shipped():
        pytest.skip("this onnxruntime has a CUDA provider: auto must ask it")
    script = ("import sys\nfrom deepraster.tiling.onnx_predictor import resolve_providers\n"
              "print(resolve_providers('auto'), resolve_providers('cpu'), 'onnxruntime' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.stdout.split() == ["['CPUExecutionProvider']", "['CPUExecutionProvider']", "False"], done.stderr
    with pytest.raises(DeepRasterError, match="no CUDA provider"):
        resolve_providers("cuda")


def test_a_users_own_telemetry_choice_stays(monkeypatch):
    """Deep Raster sets ORT_DISABLE_TELEMETRY=1 before importing onnxruntime only where the user set nothing (the run
    without it is tested in test_onnx_runtime.py::test_onnx_run_imports_no_torch)."""
    monkeypatch.setenv("ORT_DISABLE_TELEMETRY", "0")
    import_onnxruntime()
    assert os.environ["ORT_DISABLE_TELEMETRY"] == "0"
    monkeypatch.delenv("ORT_DISABLE_TELEMETRY")
    import_onnxruntime()
    assert os.environ["ORT_DISABLE_TELEMETRY"] == "1"


def test_the_memory_check_counts_the_calls_running_at_once():
    from deepraster.models.inputs import MODEL_BYTES_PER_PIXEL, check_tile_memory

    one_call = 1024 * 1024 * MODEL_BYTES_PER_PIXEL
    check_tile_memory(1024, 4, "cpu", 32, one_call)  # one call at a time fits
    with pytest.raises(DeepRasterError, match="at most 512 px or a smaller batch size"):
        check_tile_memory(1024, 4, "cpu", 32, one_call, calls_at_once=4)


def test_unknown_runtime_is_explained():
    with pytest.raises(DeepRasterError, match="choose one of auto, torch, onnxruntime"):
        choose_runtime("tensorflow")
