"""The plugin-owned package folder and the pip command that fills it.

Packages go into ``<QGIS profile>/python/deepraster-packages`` with ``pip install --target``: nothing is written
into QGIS's or the system's site-packages, so it works where plain pip is refused (Debian 12 "externally-managed
environment") and is undone by deleting one folder.

numpy stays QGIS's own: GDAL and QGIS are compiled against it (on Debian 12 numpy 1.x; a numpy 2 breaks
``osgeo.gdal_array``). pip resolves every package against a constraint pinning numpy to the version QGIS has (and
below 2), and :func:`prune_protected` deletes the copy ``--target`` installs anyway, so QGIS's numpy is the only one.
"""

from __future__ import annotations

import contextlib
import importlib
import shutil
import site
import sys
from dataclasses import dataclass
from pathlib import Path

FOLDER_NAME = "deepraster-packages"
PLUGIN_ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = PLUGIN_ROOT / "requirements.txt"
CONSTRAINTS = PLUGIN_ROOT / "constraints.txt"
PYPI = "https://pypi.org/simple"
PROTECTED = ("numpy",)
"""Packages QGIS brings and compiled code depends on: never taken from the plugin folder."""


@dataclass(frozen=True)
class Build:
    """A PyTorch build: its key, label for the dialog, its wheel index on PyTorch's server (None: PyPI's default)
    and the systems where PyPI's default wheels are that build already (then no other index is needed)."""

    key: str
    label: str
    index_url: str | None
    on_pypi_for: tuple[str, ...] = ()

    def index_for(self, platform: str) -> str | None:
        """The index to take PyTorch from on ``platform`` (``sys.platform``); None: PyPI."""
        return None if platform.startswith(self.on_pypi_for) else self.index_url  # () never matches


BUILDS = (
    Build("cpu", "CPU only (works on every computer)", "https://download.pytorch.org/whl/cpu"),
    # PyPI's Linux wheels of torch 2.14 are the CUDA 13.0 build (they depend on nvidia-*-cu13)
    Build("cu130", "NVIDIA GPU, CUDA 13.0 (driver 580+)", "https://download.pytorch.org/whl/cu130",
          on_pypi_for=("linux",)),
    # where download.pytorch.org cannot be reached: CUDA 13.0 on Linux, CPU on Windows and macOS
    Build("pypi", "PyPI's standard build", None),
)


def build_named(key: str) -> Build:
    """The build with ``key`` ("cpu", "cu130", "pypi"); ValueError naming the choices otherwise."""
    for build in BUILDS:
        if build.key == key:
            return build
    raise ValueError(f"Unknown PyTorch build {key!r}: choose one of {', '.join(b.key for b in BUILDS)}.")


def packages_folder(profile_dir: str | Path) -> Path:
    """``<profile>/python/deepraster-packages`` for a QGIS profile folder (``QgsApplication.qgisSettingsDirPath()``)."""
    return Path(profile_dir) / "python" / FOLDER_NAME


def numpy_constraints(qgis_numpy: str | None) -> list[str]:
    """Constraint lines keeping numpy what QGIS has: always below 2 unless QGIS itself ships a numpy 2, and pinned
    to QGIS's release (local tags such as ``+dfsg`` dropped) when QGIS has one."""
    if not qgis_numpy:
        return ["numpy<2"]
    release = qgis_numpy.split("+")[0]
    lines = [f"numpy=={release}"]
    if release.split(".")[0] in ("0", "1"):
        lines.insert(0, "numpy<2")
    return lines


def write_constraints(path: Path, qgis_numpy: str | None, shipped: Path | None = CONSTRAINTS) -> Path:
    """Write the constraints file of one install: the plugin's own ``constraints.txt`` and the numpy pin."""
    lines = ["# Written by the Deep Raster installer: keep numpy the one QGIS is built with."]
    if shipped is not None and shipped.is_file():
        lines += [line for line in shipped.read_text(encoding="utf-8").splitlines()
                  if line.strip() and not line.lstrip().startswith("#")]
    lines += [line for line in numpy_constraints(qgis_numpy) if line not in lines]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pip_command(python: str | Path, target: str | Path, constraints: str | Path, *, build: str = "cpu",
                requirements: str | Path = REQUIREMENTS, wheel_dir: str | Path | None = None,
                platform: str = sys.platform) -> list[str]:
    """The pip command line: ``python -m pip install --target <target> --upgrade -r <requirements>
    -c <constraints>``, PyTorch from the chosen build's index (PyPI for the rest), or only from ``wheel_dir``
    (offline: ``--no-index --find-links``)."""
    chosen = build_named(build)
    if chosen.key.startswith("cu") and platform == "darwin":
        raise ValueError("PyTorch has no CUDA build for macOS: choose the CPU build (it uses Apple's GPU via MPS).")
    command = [str(python), "-m", "pip", "install", "--target", str(target), "--upgrade",
               "--no-warn-script-location", "--no-input", "--progress-bar", "off",
               "-r", str(requirements), "-c", str(constraints)]
    if wheel_dir is not None:
        command += ["--no-index", "--find-links", str(wheel_dir)]
    elif chosen.index_for(platform):
        command += ["--index-url", chosen.index_for(platform), "--extra-index-url", PYPI]
    return command


def prune_protected(target: Path, names: tuple[str, ...] = PROTECTED) -> list[Path]:
    """Delete the copies of ``names`` (package folder, ``.libs``, ``.dist-info``, scripts) that ``pip --target``
    put into ``target``; returns what was removed."""
    removed = []
    for name in names:
        patterns = (name, f"{name}.libs", f"{name}-*.dist-info", f"{name}-*.egg-info", f"bin/{name}*",
                    "bin/f2py*" if name == "numpy" else "")
        for pattern in filter(None, patterns):
            for path in target.glob(pattern):
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
                removed.append(path)
    return removed


def _site_index(path: list[str]) -> int:
    """Index of the first site-packages (or Debian dist-packages) folder on ``path``; its length if none."""
    sites = {str(Path(p)) for p in [*site.getsitepackages(), site.getusersitepackages()]}
    for i, entry in enumerate(path):
        norm = str(Path(entry)) if entry else ""
        if norm in sites or Path(norm).name in ("site-packages", "dist-packages"):
            return i
    return len(path)


def activate(profile_dir: str | Path) -> Path:
    """Put the profile's package folder on ``sys.path`` just before the first site-packages folder (after the
    standard library), so its packages win over older system copies (Debian's sympy is too old for PyTorch) while
    QGIS's numpy stays the only numpy (:func:`prune_protected`). Idempotent; the folder need not exist yet."""
    folder = str(packages_folder(profile_dir))
    if any((Path(folder) / name).exists() for name in PROTECTED):  # a hand-made install brought its own numpy:
        for name in PROTECTED:  # import QGIS's first, so that it stays the one every module gets
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
    if folder not in sys.path:
        sys.path.insert(_site_index(sys.path), folder)
    importlib.invalidate_caches()  # a folder created after start-up is seen without restarting
    return Path(folder)


def manual_command(python: str | Path, profile_dir: str | Path, pip_names: list[str],
                   qgis_numpy: str | None) -> str:
    """The command a user can type instead of the installer: ``pip install`` the named packages with QGIS's
    Python into the profile's package folder, numpy pinned to QGIS's (no ``<`` or ``>``: the text is shown as
    HTML); PyTorch from its CPU index when torch is among them."""
    names = [f'"{n}"' for n in pip_names]
    if qgis_numpy:
        names.append(f'"numpy=={qgis_numpy.split("+")[0]}"')
    command = f'"{python}" -m pip install {" ".join(names)} --target "{packages_folder(profile_dir)}" --upgrade'
    if "torch" in pip_names:
        command += f" --index-url {BUILDS[0].index_url} --extra-index-url {PYPI}"
    return command
