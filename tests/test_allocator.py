"""Freed memory kept for reuse during a run (``tiling.allocator``) and the CPU predictor's call size.

Page faults are counted per thread (``RUSAGE_THREAD``) in a worker thread, as QGIS runs algorithms in one: freeing
and allocating the same 40 MiB buffer must stop faulting its pages in again inside :func:`freed_memory_kept`.
"""

from __future__ import annotations

import resource
import sys
import threading

import numpy as np
import pytest
import torch
from deepraster.tiling import allocator
from deepraster.tiling.allocator import freed_memory_kept
from deepraster.tiling.predictor import CPU_PIXELS_PER_CALL, TorchPredictor

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator tuning is Linux-only")


def faults_reallocating(buffer_mib: int = 40, repeats: int = 8) -> int:
    """Minor page faults of a worker thread that allocates, fills and frees a buffer ``repeats`` times."""
    result: list[int] = []

    def work() -> None:
        np.ones(buffer_mib << 18, dtype=np.float32)  # first use of this thread's heap: not counted
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        for _ in range(repeats):
            buffer = np.ones(buffer_mib << 18, dtype=np.float32)
            del buffer
        result.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    return result[0]


@linux_only
def test_freed_memory_is_reused_inside_and_returned_after() -> None:
    outside = faults_reallocating()
    with freed_memory_kept() as active:
        assert active
        inside = faults_reallocating()
    after = faults_reallocating()
    assert outside >= 100  # each 40 MiB buffer faulted in again: 160 faults as 2 MiB pages, 80k as 4 KiB pages
    assert inside * 20 <= outside, (inside, outside)
    assert after * 2 >= outside  # defaults are back once the run has left


@linux_only
def test_nested_and_concurrent_runs_share_the_tuning() -> None:
    with freed_memory_kept() as outer:
        with freed_memory_kept() as inner:
            assert outer and inner and allocator._active_runs == 2
        assert allocator._active_runs == 1 and allocator._tuned
    assert allocator._active_runs == 0 and not allocator._tuned


def test_switched_off_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPRASTER_KEEP_FREED_MEMORY", "0")
    with freed_memory_kept() as active:
        assert not active
    assert allocator._active_runs == 0


def test_cpu_predictor_splits_batches_without_changing_results() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1))
    predictor = TorchPredictor(model, torch.device("cpu"), "softmax")
    tile = 128
    batch = np.random.default_rng(1).normal(size=(6, 3, tile, tile)).astype(np.float32)
    calls: list[int] = []
    model.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    split = predictor(batch)
    per_call = CPU_PIXELS_PER_CALL // tile**2
    assert 1 < per_call < 6 and calls == [per_call, 6 - per_call]
    np.testing.assert_allclose(split, predictor._forward(batch), atol=1e-6)
    calls.clear()
    predictor(np.zeros((2, 3, 1024, 1024), np.float32))  # a tile above the budget still goes whole
    assert calls == [1, 1]


def test_cpu_predictor_leaves_ieee_arithmetic_to_the_caller() -> None:
    """Denormals are flushed only inside the forward call: after it this thread computes subnormals again."""
    predictor = TorchPredictor(torch.nn.Conv2d(1, 2, 1), torch.device("cpu"), "softmax")
    predictor(np.zeros((1, 1, 8, 8), np.float32))
    tiny = np.array([1e-38], np.float32) * np.float32(1e-3)  # 1e-41: a subnormal float32
    assert tiny[0] != 0
