"""Find the Python interpreter QGIS itself runs on, to run pip with it.

Inside QGIS, ``sys.executable`` is the QGIS program (``/usr/bin/qgis`` on Linux, ``qgis-bin.exe`` on Windows,
``QGIS.app/Contents/MacOS/QGIS`` on macOS), not a Python. The interpreter that shares QGIS's packages lives next to
``sys.prefix`` / ``sys.base_prefix`` (Debian: ``/usr/bin/python3.11``; OSGeo4W and the standalone Windows installer:
``apps/Python3x/python.exe`` or ``bin/python3.exe``; macOS bundle: ``Contents/MacOS/bin/python3``). A candidate is
accepted only when it runs and reports the same Python version as the running one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROBE = (
    "import json, sys\n"
    "info = {'version': '%d.%d' % sys.version_info[:2], 'numpy': None, 'pip': None}\n"
    "try:\n    import numpy; info['numpy'] = numpy.__version__\nexcept Exception: pass\n"
    "try:\n    import pip; info['pip'] = pip.__version__\nexcept Exception: pass\n"
    "print(json.dumps(info))\n"
)
PROBE_TIMEOUT_S = 60


@dataclass(frozen=True)
class Interpreter:
    """A Python that runs: its path, version ("3.11"), and the numpy and pip it sees (None: not installed)."""

    path: Path
    version: str
    numpy: str | None
    pip: str | None


def _is_python(path: str | os.PathLike | None) -> bool:
    return bool(path) and Path(path).name.lower().startswith("python")


def _names(windows: bool) -> tuple[str, ...]:
    major, minor = sys.version_info[:2]
    if windows:
        return ("python.exe", "python3.exe", f"python{major}.exe")
    return (f"python{major}.{minor}", f"python{major}", "python")


def candidates(executable: str | None = None, prefixes: Iterable[str] | None = None,
               windows: bool | None = None) -> list[Path]:
    """Where QGIS's Python may be, most likely first (duplicates removed, existence not checked).

    ``executable`` defaults to ``sys.executable``, ``prefixes`` to ``sys.prefix``, ``sys.base_prefix``,
    ``sys.exec_prefix`` and the folder of ``sys._base_executable``; ``windows`` to the running platform.
    """
    windows = os.name == "nt" if windows is None else windows
    executable = sys.executable if executable is None else executable
    base = getattr(sys, "_base_executable", None)
    if prefixes is None:
        prefixes = [sys.prefix, sys.base_prefix, sys.exec_prefix]
    out: list[Path] = [Path(p) for p in (executable, base if executable == sys.executable else None) if _is_python(p)]
    for prefix in [Path(p) for p in prefixes if p]:
        if windows:  # OSGeo4W / standalone: <root>/apps/Python3x is the prefix, <root>/bin holds python3.exe
            out += [prefix / name for name in _names(True)]
            out += [prefix.parent.parent / "bin" / name for name in ("python3.exe", "python.exe")]
        else:
            out += [prefix / "bin" / name for name in _names(False)]
    if executable and not _is_python(executable):  # next to the QGIS program (macOS bundle: MacOS/bin/python3)
        folder = Path(executable).parent
        for sub in (folder, folder / "bin"):
            out += [sub / name for name in _names(windows)]
    unique: list[Path] = []
    for path in out:
        if path not in unique:
            unique.append(path)
    return unique


def probe(path: Path, env: dict[str, str] | None = None) -> Interpreter | None:
    """Run ``path`` and ask its version, numpy and pip; None when it is not a working Python."""
    try:
        result = subprocess.run([str(path), "-c", PROBE], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                                env=env, stdin=subprocess.DEVNULL, creationflags=_no_window())
        info = json.loads(result.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    if result.returncode != 0:
        return None
    return Interpreter(path, info["version"], info["numpy"], info["pip"])


def _no_window() -> int:
    """Windows: start console programs without flashing a console window over QGIS."""
    return getattr(subprocess, "CREATE_NO_WINDOW", 0)


def find_python(env: dict[str, str] | None = None) -> Interpreter:
    """QGIS's own Python, checked by running it; raises LookupError naming every place looked at."""
    wanted = "{}.{}".format(*sys.version_info[:2])
    try:  # the very Python running QGIS first: another of the same version (pyenv, conda on PATH) sees other numpy
        exact = probe(this_python(), env)
        if exact is not None:
            return exact
    except LookupError:
        pass
    tried = []
    for path in candidates():
        if not path.is_file():
            continue
        found = probe(path, env)
        if found is not None and found.version == wanted:
            return found
        tried.append(f"{path} ({'Python ' + found.version if found else 'does not run'})")
    raise LookupError(
        f"Cannot find the Python {wanted} that QGIS runs on. Looked next to {sys.prefix} and {sys.executable}"
        + (f"; found only: {', '.join(tried)}" if tried else "")
        + ". Install the packages by hand with QGIS's Python (on Windows: the OSGeo4W Shell's python3) as "
        "docs/installer.md shows."
    )


def likely_python() -> str:
    """The best guess of QGIS's Python without running anything (for messages): the first candidate that exists,
    else "python3"."""
    return next((str(p) for p in candidates() if p.is_file()), "python3")


SAME_PROBE = "import os, sys; print(repr((sys.version, os.__file__)))"


def runs_this_python(path: str | os.PathLike) -> bool:
    """Whether ``path`` is the very Python running now: same build (``sys.version``) and the same standard library
    (a pyenv or conda Python of the same minor version is not: QGIS's ``sys.path`` would mix two builds)."""
    try:
        result = subprocess.run([str(path), "-I", "-c", SAME_PROBE], capture_output=True, text=True,
                                timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL, creationflags=_no_window())
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0 and result.stdout.strip() == repr((sys.version, os.__file__))


def this_python() -> Path:
    """The executable of the Python running now, to start helper processes with (inside QGIS ``sys.executable``
    may be the QGIS program, or a different Python found on PATH); raises LookupError when none is found."""
    for path in [Path(sys.executable), *candidates()]:
        if path.is_file() and runs_this_python(path):
            return path
    raise LookupError(f"Cannot find the executable of the running Python {sys.version.split()[0]} (looked at "
                      f"{sys.executable} and next to {sys.prefix}).")
