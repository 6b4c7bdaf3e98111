"""Choosing ONNX Runtime's execution providers, and importing onnxruntime with its usage telemetry off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
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
