"""The installer of the deep-learning packages (installer/, algorithms/install_packages.py, docs/installer.md): QGIS's
Python found, the pip command, a whole install into a fresh QGIS profile with the distribution's QGIS Python
(/usr/bin/python3) from a local wheel folder, the packages seen by a fresh QGIS process, the install hint, cancel.

No network: the wheels are built here (a wheel is a zip with three metadata files). Besides the package under test
(``dr_probe``) the folder holds stand-in wheels named numpy (1.x as QGIS has, and a 2.0) and sympy (newer than
Debian's), which prove that numpy 2 is never chosen, that pip's numpy copy is removed, and that the folder's own
packages come before the system's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import pytest
from helpers import REPO

PYTHON = Path("/usr/bin/python3")  # Debian's QGIS Python
pytestmark = pytest.mark.skipif(not PYTHON.is_file(), reason="needs the distribution's QGIS Python")


def make_wheel(folder: Path, name: str, version: str, source: str, requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel ``name-version-py3-none-any.whl`` holding ``name/__init__.py`` = ``source``."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": source,
        f"{dist_info}/METADATA": "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
            name, version, "".join(f"Requires-Dist: {r}\n" for r in requires)),
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: deepraster-tests\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist_info}/RECORD"] = "\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return wheel


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the venv on PYTHONPATH and without this machine's pip settings (its local
    indexes and find-links would make the tests depend on them)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, QT_QPA_PLATFORM="offscreen", **extra)
    return env


def qgis_numpy() -> str:
    return subprocess.run([str(PYTHON), "-c", "import numpy; print(numpy.__version__)"], capture_output=True,
                          text=True, env=clean_env(), check=True).stdout.strip()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    make_wheel(folder, "dr_probe", "1.0", "VALUE = 42\n", requires=("numpy", "sympy"))
    make_wheel(folder, "numpy", qgis_numpy(), "STAND_IN = True\n")
    make_wheel(folder, "numpy", "2.0.0", "STAND_IN = True\n")
    make_wheel(folder, "sympy", "1.13.3", "__version__ = '1.13.3'\nSTAND_IN = True\n")
    return folder


def test_interpreter_candidates_for_each_platform():
    """Inside QGIS sys.executable is the QGIS program; QGIS's Python is found next to the prefix or the program."""
    from deepraster.installer.interpreter import candidates

    major_minor = "python{}.{}".format(*__import__("sys").version_info[:2])
    debian = candidates("/usr/bin/qgis", ["/usr"], windows=False)
    assert debian[0] == Path(f"/usr/bin/{major_minor}") and Path("/usr/bin/qgis") not in debian
    osgeo4w = candidates("C:/OSGeo4W/bin/qgis-bin.exe", ["C:/OSGeo4W/apps/Python39"], windows=True)
    assert osgeo4w[0] == Path("C:/OSGeo4W/apps/Python39/python.exe")
    assert Path("C:/OSGeo4W/bin/python3.exe") in osgeo4w
    mac = candidates("/Applications/QGIS.app/Contents/MacOS/QGIS", ["/Applications/QGIS.app/Contents/MacOS"],
                     windows=False)
    assert Path("/Applications/QGIS.app/Contents/MacOS/bin/python3") in mac
    assert candidates("/opt/venv/bin/python", [], windows=False)[0] == Path("/opt/venv/bin/python")


def test_finds_qgis_python_from_inside_qgis():
    """With sys.executable the QGIS program, as in the desktop, the finder runs Debian's Python and reads its numpy
    and pip."""
    script = ("import sys; sys.executable = sys._base_executable = '/usr/bin/qgis'\n"
              "from deepraster.installer.interpreter import find_python, likely_python\n"
              "found = find_python(); print(found.path, found.version, found.numpy, bool(found.pip), likely_python())")
    result = subprocess.run([str(PYTHON), "-c", script], capture_output=True, text=True, timeout=60,
                            env=clean_env(PYTHONPATH=str(REPO / ".build" / "plugins")))
    assert result.returncode == 0, result.stderr
    path, version, numpy, has_pip, likely = result.stdout.split()
    assert Path(path).resolve() == PYTHON.resolve() and likely == path
    assert version == "{}.{}".format(*__import__("sys").version_info[:2]) or version.startswith("3.")
    assert numpy == qgis_numpy() and has_pip == "True"


def test_pip_command(tmp_path):
    """CPU / CUDA / offline commands: --target in the profile, PyTorch's index for the chosen build, numpy
    constrained below 2 and to QGIS's release, never a system install."""
    from deepraster.installer.pip_target import (
        BUILDS,
        CONSTRAINTS,
        REQUIREMENTS,
        manual_command,
        packages_folder,
        pip_command,
        write_constraints,
    )

    target = packages_folder(tmp_path / "profiles" / "default")
    assert target == tmp_path / "profiles" / "default" / "python" / "deepraster-packages"
    constraints = write_constraints(tmp_path / "c.txt", "1.24.2+dfsg")
    lines = constraints.read_text().splitlines()
    assert lines[-1] == "numpy==1.24.2" and "numpy<2" in lines and "ml_dtypes<0.6" in lines
    assert "numpy<2" in REQUIREMENTS.read_text().splitlines() and "numpy<2" in CONSTRAINTS.read_text()
    cpu = pip_command(PYTHON, target, constraints)
    assert cpu[:8] == [str(PYTHON), "-m", "pip", "install", "--target", str(target), "--upgrade",
                       "--no-warn-script-location"]
    assert cpu[cpu.index("-r") + 1] == str(REQUIREMENTS) and cpu[cpu.index("-c") + 1] == str(constraints)
    assert cpu[cpu.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    assert cpu[cpu.index("--extra-index-url") + 1] == "https://pypi.org/simple"
    assert not {"--user", "--break-system-packages", "--no-index"} & set(cpu)
    assert [b.key for b in BUILDS] == ["cpu", "cu130", "pypi"]
    cuda_windows = pip_command(PYTHON, target, constraints, build="cu130", platform="win32")
    assert cuda_windows[cuda_windows.index("--index-url") + 1] == "https://download.pytorch.org/whl/cu130"
    for build, platform in (("cu130", "linux"), ("pypi", "linux"), ("pypi", "win32"), ("pypi", "darwin")):
        # PyPI's own torch wheels: the CUDA 13.0 build on Linux, the CPU build elsewhere
        assert "--index-url" not in pip_command(PYTHON, target, constraints, build=build, platform=platform)
    offline = pip_command(PYTHON, target, constraints, build="cu130", wheel_dir=tmp_path)
    assert offline[-3:] == ["--no-index", "--find-links", str(tmp_path)] and "--index-url" not in offline
    with pytest.raises(ValueError, match="no CUDA build for macOS"):
        pip_command(PYTHON, target, constraints, build="cu130", platform="darwin")
    with pytest.raises(ValueError, match="cpu, cu130, pypi"):
        pip_command(PYTHON, target, constraints, build="rocm")
    manual = manual_command(PYTHON, tmp_path, ["torch"], "1.24.2")
    assert f'--target "{packages_folder(tmp_path)}"' in manual and '"numpy==1.24.2"' in manual and "<" not in manual


INSTALL_SCRIPT = """
import sys
sys.path.append("/usr/share/qgis/python/plugins")
from qgis.core import QgsApplication, QgsProcessingFeedback
app = QgsApplication([], False); app.initQgis()
from processing.core.Processing import Processing
Processing.initialize()
import processing, deepraster
plugin = deepraster.classFactory(None); plugin.initProcessing()


class Feedback(QgsProcessingFeedback):
    lines, progress = [], []
    def pushConsoleInfo(self, text): self.lines.append(text)
    def setProgressText(self, text): pass


feedback = Feedback()
feedback.progressChanged.connect(Feedback.progress.append)
alg = QgsApplication.processingRegistry().algorithmById("deepraster:install_packages")
print("CAN_EXECUTE", alg.canExecute())
out = processing.run(alg, {"BUILD": 0, "WHEELS": sys.argv[1], "REQUIREMENTS": sys.argv[2], "LOG": sys.argv[3]},
                     feedback=feedback)
import dr_probe
print("FOLDER", out["FOLDER"]); print("LINES", len(feedback.lines)); print("PROGRESS", max(feedback.progress))
print("SAME_SESSION", dr_probe.VALUE, dr_probe.__file__)
"""

FRESH_SCRIPT = """
import sys
from qgis.core import QgsApplication
app = QgsApplication([], False); app.initQgis()
import deepraster
deepraster.classFactory(None)
import dr_probe, numpy, sympy
folder = next(p for p in sys.path if p.endswith("deepraster-packages"))
system = next(i for i, p in enumerate(sys.path) if p.endswith("dist-packages"))
print("PROBE", dr_probe.__file__); print("NUMPY", numpy.__file__, hasattr(numpy, "STAND_IN"))
print("SYMPY", sympy.__version__, sympy.__file__); print("BEFORE_SYSTEM", sys.path.index(folder) < system)
"""


def test_install_end_to_end_in_a_fresh_profile(tmp_path, wheels):
    """The algorithm, run with processing.run by Debian's QGIS Python in a fresh profile, installs from the local
    wheel folder; a fresh QGIS process with the plugin started imports the package from the profile's folder, with
    QGIS's own numpy."""
    profiles = tmp_path / "profiles-root"
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("dr_probe==1.0\n")
    log = tmp_path / "install.log"
    env = clean_env(QGIS_CUSTOM_CONFIG_PATH=str(profiles), PYTHONPATH=str(REPO / ".build" / "plugins"))
    start = time.monotonic()
    run = subprocess.run([str(PYTHON), "-c", INSTALL_SCRIPT, str(wheels), str(requirements), str(log)],
                         capture_output=True, text=True, env=env, timeout=120)
    seconds = time.monotonic() - start
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    folder = profiles / "profiles" / "default" / "python" / "deepraster-packages"
    assert "CAN_EXECUTE (True, '')" in run.stdout  # needs none of the packages it installs
    assert f"FOLDER {folder}" in run.stdout
    assert f"SAME_SESSION 42 {folder}/dr_probe/__init__.py" in run.stdout  # usable before a restart
    assert int(run.stdout.split("LINES ")[1].split()[0]) >= 4 and "PROGRESS 100.0" in run.stdout
    text = log.read_text()
    assert f"numpy-{qgis_numpy()}-py3-none-any.whl" in text and "numpy-2.0.0" not in text
    assert "Successfully installed" in text and "exit code 0" in text
    assert {p.name for p in folder.iterdir()} >= {"dr_probe", "sympy"}
    assert not list(folder.glob("numpy*")), "pip's numpy copy must go: QGIS's own is used"
    fresh = subprocess.run([str(PYTHON), "-c", FRESH_SCRIPT], capture_output=True, text=True, env=env, timeout=60)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert f"PROBE {folder}/dr_probe/__init__.py" in fresh.stdout
    assert "NUMPY /usr/lib/python3/dist-packages/numpy/__init__.py False" in fresh.stdout
    assert f"SYMPY 1.13.3 {folder}" in fresh.stdout and "BEFORE_SYSTEM True" in fresh.stdout
    print(f"install through processing.run: {seconds:.1f} s")


def test_a_failed_install_says_why(tmp_path, wheels):
    """A requirement the wheel folder lacks: an InstallError with pip's error, the advice and the log's path."""
    from deepraster.installer import InstallError, InstallRequest, install_packages

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("not-in-the-folder==3.0\n")
    request = InstallRequest(tmp_path / "profile", wheel_dir=wheels, requirements=requirements, python=PYTHON,
                             log_path=tmp_path / "install.log")
    with pytest.raises(InstallError) as error:
        install_packages(request, env=clean_env())
    message = str(error.value)
    assert "No matching distribution found for not-in-the-folder==3.0" in message
    assert "add its wheel" in message and str(tmp_path / "install.log") in message
    with pytest.raises(InstallError, match="does not exist"):
        install_packages(InstallRequest(tmp_path / "profile", wheel_dir=tmp_path / "none"), env=clean_env())


def test_install_hint_is_plain_text(qgis_app):
    """The dialog shows the hint as HTML: nothing in it may read as markup; it names the installer first, then the
    manual command with QGIS's Python and --target into the profile's folder."""
    from deepraster.algorithms.base import install_hint
    from deepraster.installer import packages_folder
    from qgis.core import QgsApplication
    from qgis.PyQt.QtGui import QTextDocument

    hint = install_hint(["torch", "segmentation-models-pytorch"])
    assert not set("<>&") & set(hint)
    document = QTextDocument()
    document.setHtml(hint)
    assert document.toPlainText() == hint  # rendered as HTML, nothing is lost
    assert hint.index("Install deep-learning packages") < hint.index("pip install")
    folder = packages_folder(QgsApplication.qgisSettingsDirPath())
    assert '-m pip install "torch" "segmentation-models-pytorch" "numpy==' in hint
    assert f'--target "{folder}" --upgrade' in hint
    assert "download.pytorch.org/whl/cpu" in hint


def _stalling_server() -> tuple[socket.socket, int]:
    """A local HTTP "index" that accepts connections and never answers (pip waits on it until cancelled)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held = []
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in range(8)], daemon=True).start()
    return server, server.getsockname()[1]


def test_cancel_stops_pip(tmp_path):
    """Cancel while pip waits on its index: pip's process group is ended within 2 s and the log says so."""
    from deepraster.installer.runner import run_pip

    server, port = _stalling_server()
    command = [str(PYTHON), "-m", "pip", "install", "--target", str(tmp_path / "t"), "--index-url",
               f"http://127.0.0.1:{port}/simple", "--timeout", "60", "--retries", "0", "dr_probe"]
    lines, asked = [], []

    def is_cancelled() -> bool:
        if lines and not asked and time.monotonic() - started > 1.0:
            asked.append(time.monotonic())
        return bool(asked)

    started = time.monotonic()
    result = run_pip(command, tmp_path / "pip.log", on_line=lines.append, is_cancelled=is_cancelled, env=clean_env())
    latency = time.monotonic() - asked[0]
    server.close()
    assert result.cancelled and result.returncode is None
    assert latency < 2.0, f"cancel took {latency:.2f} s"
    assert "Looking in indexes" in "\n".join(lines)
    assert "cancelled after" in (tmp_path / "pip.log").read_text()
    print(f"cancel latency {latency:.2f} s")


MENU_SCRIPT = r'''
import json, os
import qgis.utils
from qgis.PyQt.QtCore import QTimer
from qgis.gui import QgsProcessingAlgorithmDialogBase
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface

result = {"polls": 0}


def menu_entries():
    return [(top.text(), sub.text()) for top in iface.pluginMenu().actions() if top.menu()
            for sub in top.menu().actions()]


def close_dialog():
    dialog = next((w for w in QApplication.topLevelWidgets()  # no window manager: nothing is "active"
                   if w.isVisible() and isinstance(w, QgsProcessingAlgorithmDialogBase)), None)
    result["polls"] += 1
    if dialog is None and result["polls"] < 100:
        QTimer.singleShot(100, close_dialog)
        return
    if dialog is not None:
        result["dialog"] = type(dialog).__name__
        try:
            result["algorithm"] = dialog.algorithm().id()
        except Exception as exc:
            result["error"] = repr(exc)
        dialog.reject()
    print("MENU dialog", result.get("dialog"), flush=True)


def main():
    try:
        result["menu"] = menu_entries()
        action = next(a for top in iface.pluginMenu().actions() if top.menu() for a in top.menu().actions()
                      if a.objectName() == "deepraster_install_packages")
        QTimer.singleShot(100, close_dialog)
        action.trigger()  # opens the dialog modally; close_dialog closes it
        qgis.utils.unloadPlugin("deepraster")
        result["menu_after_unload"] = menu_entries()
    except Exception as exc:
        result["error"] = repr(exc)
    with open(os.environ["DEEPRASTER_MENU_RESULT"], "w") as f:
        json.dump(result, f)
    QTimer.singleShot(0, iface.actionExit().trigger)


QTimer.singleShot(0, main)
'''


def test_plugin_menu_opens_the_installer(tmp_path):
    """In the real QGIS desktop (Xvfb), the plugin menu has "Install deep-learning packages…"; it opens the
    installer's dialog, and unloading the plugin removes it (QGIS without PyTorch: the installer needs none)."""
    from test_desktop_smoke import QGIS, XVFB_RUN, _profile

    if XVFB_RUN is None or not os.path.exists(QGIS):
        pytest.skip("needs xvfb-run and the QGIS desktop")
    script, result_path = tmp_path / "menu.py", tmp_path / "menu.json"
    script.write_text(MENU_SCRIPT, encoding="utf-8")
    (tmp_path / "runtime").mkdir(mode=0o700)
    env = clean_env(QGIS_PLUGINPATH=str(REPO / ".build" / "plugins"), XDG_RUNTIME_DIR=str(tmp_path / "runtime"),
                    DEEPRASTER_MENU_RESULT=str(result_path))
    env.pop("QT_QPA_PLATFORM")
    command = [XVFB_RUN, "-a", QGIS, "--nologo", "--noversioncheck", "--profiles-path", str(_profile(tmp_path)),
               "--code", str(script)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                            start_new_session=True)
    try:
        proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # a dialog left open: end QGIS and Xvfb (the session), then fail
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert result_path.is_file(), f"QGIS wrote no result (rc={proc.returncode})"
    result = json.loads(result_path.read_text())
    assert "error" not in result, result
    assert ["&Deep Raster", "Install deep-learning packages…"] in result["menu"]
    assert result["algorithm"] == "deepraster:install_packages" and result["dialog"] == "AlgorithmDialog"
    assert not [entry for entry in result["menu_after_unload"] if entry[0] == "&Deep Raster"]
