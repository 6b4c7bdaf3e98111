"""Keep libraries that crash QGIS from loading inside it: today ``triton``.

Why: importing segmentation-models-pytorch imports torchvision, which imports ``torch._dynamo``, which probes
``import triton``. Triton's native module carries its own LLVM; QGIS desktop has already loaded Mesa's
``libLLVM-15.so.1`` for OpenGL (every Mesa driver on Debian 12 links it), and the two LLVMs clash: the process dies
with a segmentation fault while ``triton._C.libtriton`` is loaded (reproduce in plain Python:
``ctypes.CDLL("libLLVM-15.so.1", mode=ctypes.RTLD_GLOBAL)`` then ``import segmentation_models_pytorch``).

Triton is optional for PyTorch: it only compiles kernels for ``torch.compile`` / inductor, which this plugin never
uses. PyTorch probes it in two ways, and the guard answers "not installed" to both:

- ``import triton`` (``torch.utils._triton.has_triton_package``, ``get_triton_version``) raises
  ``ModuleNotFoundError``;
- ``importlib.util.find_spec("triton")`` (``torch.cuda``, ``torch._native``, ``torch._inductor``) returns None.

Both come from a ``None`` entry in ``sys.modules`` (Python's documented way to block an import); a
``sys.meta_path`` finder at the front re-blocks the name should anything drop that entry.

Set ``DEEPRASTER_ALLOW_TRITON=1`` before QGIS starts to turn the guard off (for example in a QGIS without OpenGL,
where Triton loads safely). This module must not import qgis, torch or anything heavy: it runs first.
"""

from __future__ import annotations

import importlib.abc
import os
import sys

BLOCKED = ("triton",)
ENV_ALLOW = "DEEPRASTER_ALLOW_TRITON"


def _allowed_by_env() -> bool:
    return os.environ.get(ENV_ALLOW, "").strip().lower() in {"1", "true", "yes", "on"}


class BlockedImportFinder(importlib.abc.MetaPathFinder):
    """A meta-path finder that makes ``import <name>`` (and its submodules) fail with ModuleNotFoundError."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = tuple(names)

    def blocks(self, fullname: str) -> bool:
        return any(fullname == name or fullname.startswith(name + ".") for name in self.names)

    def find_spec(self, fullname, path=None, target=None):  # noqa: ARG002 (importlib protocol)
        if not self.blocks(fullname):
            return None
        # Put the None marker back, so that importlib.util.find_spec answers None again after this.
        top = fullname.split(".")[0]
        if top in self.names and top not in sys.modules:
            sys.modules[top] = None
        raise ModuleNotFoundError(f"{fullname} is blocked inside QGIS by Deep Raster (it crashes QGIS); set "
                                  f"{ENV_ALLOW}=1 to allow it", name=fullname)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.names!r})"


def installed_finder() -> BlockedImportFinder | None:
    """The guard's finder in ``sys.meta_path``, or None when the guard is not installed."""
    return next((f for f in sys.meta_path if isinstance(f, BlockedImportFinder)), None)


def install(names: tuple[str, ...] = BLOCKED) -> list[str]:
    """Block ``names`` for the rest of the process (idempotent); returns the names blocked now.

    Does nothing when ``DEEPRASTER_ALLOW_TRITON=1``. A name already imported (a module object in ``sys.modules``)
    is left alone: it is loaded already, and taking it away would break whoever holds it.
    """
    if _allowed_by_env():
        return []
    blocked = [name for name in names if not isinstance(sys.modules.get(name), type(sys))]
    if not blocked:
        return []
    for name in blocked:
        sys.modules[name] = None
    if installed_finder() is None:
        sys.meta_path.insert(0, BlockedImportFinder(tuple(blocked)))
    return blocked


def uninstall() -> None:
    """Remove the guard (tests; the plugin keeps it for the life of the process)."""
    finder = installed_finder()
    while finder is not None:
        sys.meta_path.remove(finder)
        for name in finder.names:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
        finder = installed_finder()
