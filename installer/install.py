"""One install, start to end: find QGIS's Python, write the numpy constraint, run pip into the profile's package
folder, remove the numpy copy pip put there, and make the packages importable in the running QGIS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .interpreter import Interpreter, find_python, probe
from .pip_target import REQUIREMENTS, activate, packages_folder, pip_command, prune_protected, write_constraints
from .runner import PipResult, pip_environment, run_pip

LOG_NAME = "deepraster-install.log"


class InstallError(Exception):
    """An install that cannot start or that pip could not finish; the message says what to change."""


@dataclass(frozen=True)
class InstallRequest:
    """What to install where: the QGIS profile folder, the PyTorch build ("cpu", "cu130", "pypi"), an optional
    folder of wheels for an offline install, the requirements file, the log file (default: next to the package
    folder) and the Python to run pip with (default: QGIS's, found)."""

    profile_dir: Path
    build: str = "cpu"
    wheel_dir: Path | None = None
    requirements: Path = REQUIREMENTS
    log_path: Path | None = None
    python: Path | None = None

    def log_file(self) -> Path:
        return self.log_path or packages_folder(self.profile_dir).parent / LOG_NAME


@dataclass(frozen=True)
class InstallOutcome:
    """The folder the packages are in, the interpreter that ran pip, and pip's result."""

    folder: Path
    python: Interpreter
    pip: PipResult


HINTS = (
    (("No matching distribution found", "Could not find a version"),
     "pip found no version of a package that fits (its name is in the log). Offline: add its wheel, built for "
     "this Python, to the wheel folder. Online: check the internet connection; the PyTorch build chosen may not "
     "exist for this Python version or system (try the CPU build)."),
    (("NewConnectionError", "Temporary failure in name resolution", "Could not fetch URL", "ProxyError",
      "ConnectTimeout", "Read timed out"),
     "pip could not reach the package index. Check the internet connection and proxy (pip reads HTTPS_PROXY), "
     "or install offline from a folder of wheel files."),
    (("No space left on device",), "The disk is full: free space in the QGIS profile's folder and run again."),
    (("Permission denied", "Access is denied"),
     "A file could not be written: close other QGIS windows that use the packages, check that you may write "
     "to the profile's python folder, and run again."),
    (("externally-managed-environment",), "pip refused to write into the system Python; this installer only uses "
     "--target, so please report this with the log."),
)


def explain_failure(result: PipResult) -> str:
    """A message for a failed pip run: the likely cause and what to do, pip's last error line, the log's path."""
    text = "\n".join(result.tail)
    advice = next((hint for needles, hint in HINTS if any(n in text for n in needles)),
                  "See the log for pip's own explanation.")
    errors = [line.strip() for line in result.tail if line.strip().startswith("ERROR")]
    last = f' pip said: "{errors[-1]}".' if errors else ""
    return f"Installing the packages failed (pip exit code {result.returncode}).{last} {advice} Log: {result.log_path}"


def resolve_python(request: InstallRequest, env: dict[str, str] | None) -> Interpreter:
    """The interpreter to run pip with, checked to run and to have pip."""
    if request.python is not None:
        python = probe(request.python, env)
        if python is None:
            raise InstallError(f"{request.python} does not run as a Python interpreter; choose QGIS's Python.")
    else:
        try:
            python = find_python(env)
        except LookupError as exc:
            raise InstallError(str(exc)) from exc
    if python.pip is None:
        raise InstallError(
            f"QGIS's Python ({python.path}) has no pip. Install it, then run again: on Debian or Ubuntu "
            "`sudo apt install python3-pip`; on Windows, run the OSGeo4W setup and add the python3-pip package.")
    return python


def install_packages(request: InstallRequest, *, on_line: Callable[[str], None] = lambda line: None,
                     on_progress: Callable[[float], None] = lambda fraction: None,
                     is_cancelled: Callable[[], bool] = lambda: False,
                     env: dict[str, str] | None = None) -> InstallOutcome:
    """Install the requirements into the profile's package folder; raises :class:`InstallError` on failure. A
    cancelled run returns with ``pip.cancelled`` set (pip installs into a temporary folder first, so a run
    cancelled while downloading leaves the package folder as it was)."""
    if not Path(request.requirements).is_file():
        raise InstallError(f"The requirements file {request.requirements} does not exist.")
    if request.wheel_dir is not None and not Path(request.wheel_dir).is_dir():
        raise InstallError(f"The wheel folder {request.wheel_dir} does not exist; choose the folder that holds "
                           "the .whl files, or leave it empty to download.")
    python = resolve_python(request, env)
    folder = packages_folder(request.profile_dir)
    log = request.log_file()
    constraints = write_constraints(log.with_name(log.stem + "-constraints.txt"), python.numpy)
    try:
        command = pip_command(python.path, folder, constraints, build=request.build,
                              requirements=request.requirements, wheel_dir=request.wheel_dir)
    except ValueError as exc:
        raise InstallError(str(exc)) from exc
    folder.mkdir(parents=True, exist_ok=True)
    on_line(f"Python: {python.path} (Python {python.version}, numpy {python.numpy or 'none'}, pip {python.pip})")
    on_line(f"Installing into {folder}")
    result = run_pip(command, log, on_line=on_line, on_progress=on_progress, is_cancelled=is_cancelled,
                     env=pip_environment(env), requirements=_count_requirements(Path(request.requirements)))
    if result.cancelled:
        return InstallOutcome(folder, python, result)
    if result.returncode != 0:
        raise InstallError(explain_failure(result))
    for path in prune_protected(folder):
        on_line(f"Removed {path.name} from the package folder: QGIS's own copy is used")
    activate(request.profile_dir)
    return InstallOutcome(folder, python, result)


def _count_requirements(path: Path) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return sum(1 for line in lines if line.strip() and not line.lstrip().startswith(("#", "-")))
