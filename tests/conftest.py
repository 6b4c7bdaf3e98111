"""Shared fixtures: the real data built by scripts/setup.sh, a headless QGIS with Processing and the Deep Raster
provider, and a factory of small GeoTIFFs for edge cases (generators live in ``helpers``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # also where a test imports onnxruntime itself, and in children

TESTS = Path(__file__).resolve().parent
PLUGINS = TESTS.parent / ".build" / "plugins"
for folder in (PLUGINS, TESTS):  # `import deepraster` as QGIS loads it; `import helpers` from test modules
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from helpers import MODEL_4B_L1C, MODEL_6B_L1C, S2_10M, S2_30M, write_raster  # noqa: E402

_KEEP: list = []  # the processing registry does not own Python providers: keep them alive here


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make setup` (scripts/setup.sh) to build the real test data.")
    return path


@pytest.fixture(scope="session")
def s2_10m() -> Path:
    """The real Sentinel-2 L1C scene stacked at 10 m (1536×768 px, 10 bands B02…B12, uint16 DN)."""
    return _require(S2_10M)


@pytest.fixture(scope="session")
def s2_30m() -> Path:
    """The same scene at 30 m (512×256 px)."""
    return _require(S2_30M)


@pytest.fixture(scope="session")
def model_6b_l1c() -> Path:
    """The ukis-csmask 6-band L1C cloud/shadow U-Net as a Deep Raster package folder."""
    return _require(MODEL_6B_L1C)


@pytest.fixture(scope="session")
def model_4b_l1c() -> Path:
    """The ukis-csmask 4-band L1C cloud/shadow U-Net as a Deep Raster package folder."""
    return _require(MODEL_4B_L1C)


@pytest.fixture(scope="session")
def qgis_app():
    """A headless QgsApplication with Processing initialised and the Deep Raster provider registered."""
    from qgis.core import QgsApplication

    app = QgsApplication.instance()
    if app is None:
        app = QgsApplication([], False)
        app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    registry = QgsApplication.processingRegistry()
    if registry.providerById("deepraster") is None:
        from deepraster.provider import DeepRasterProvider

        _KEEP.append(DeepRasterProvider())  # the registry does not own Python providers: keep a reference
        assert registry.addProvider(_KEEP[-1])
    return app


@pytest.fixture
def make_raster(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing small GeoTIFFs into the test's temporary folder: ``make_raster("a.tif", array, **kw)``."""

    def make(name: str, data, **kwargs) -> Path:
        return write_raster(tmp_path / name, data, **kwargs)

    return make




_SET_ON_FIRST_USE = {"TORCHINDUCTOR_CACHE_DIR", "CUDA_MODULE_LOADING", "KMP_INIT_AT_FORK", "KMP_DUPLICATE_LIB_OK"}
"""Environment variables libraries set themselves when first imported or used (PyTorch, scikit-learn's OpenMP
settings): not a test's doing."""


def _process_state() -> dict[str, object]:
    """Process-wide state a test could leave changed and so make a later test depend on the order of the run: the
    environment (inherited by every child process), multiprocessing's executable, PyTorch's thread counts and
    deterministic mode (CPU sums round differently with another thread count), and whether this thread flushes
    denormal floats to zero."""
    import multiprocessing.spawn

    import numpy as np

    state: dict[str, object] = {f"env {name}": value for name, value in os.environ.items()
                                if name != "PYTEST_CURRENT_TEST" and name not in _SET_ON_FIRST_USE}
    state["multiprocessing executable"] = multiprocessing.spawn.get_executable()
    state["denormals flushed"] = bool(np.float32(1e-39) * np.float32(1.0) == 0)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        state.update(torch_threads=torch.get_num_threads(), torch_interop_threads=torch.get_num_interop_threads(),
                     torch_deterministic=torch.are_deterministic_algorithms_enabled())
    return state


@pytest.fixture(autouse=True)
def process_state_restored():
    """Fails the test that leaves process-wide state changed (the cause of order-dependent failures elsewhere)."""
    before = _process_state()
    yield
    after = _process_state()
    changed = {key: (before.get(key), after.get(key)) for key in before.keys() | after.keys()
               if before.get(key) != after.get(key) and not (key.startswith("torch") and key not in before)}
    assert not changed, f"this test left process-wide state changed (before, after): {changed}"
