"""Screenshots of the plugin in the real QGIS desktop, and the layout check behind them.

Starts ``/usr/bin/qgis`` under Xvfb (as ``tests/test_desktop_smoke.py`` does) with the plugin from ``.build/plugins``
and, inside QGIS:

- opens the Classify pixels and the Install deep-learning packages dialogs at their default size, checks that no
  parameter panel needs a horizontal scroll bar and that every browse ("…") button lies inside the visible area,
  and grabs both dialogs;
- classifies the real 30 m Sentinel-2 scene with the 6-band package through ``processing.runAndLoadResults`` and
  grabs the main window (layer panel and map) once the canvas has rendered.

Writes ``classify_dialog.png``, ``installer_dialog.png``, ``layers.png`` and ``layout.json`` (the check's figures)
into the output folder (default ``docs/screenshots``). ``bash scripts/setup.sh`` must have run. Usage::

    python3 scripts/screenshots.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QGIS = "/usr/bin/qgis"
SCREEN = "1280x1024x24"

DESKTOP_SCRIPT = r'''
import json, os, traceback
from qgis.core import QgsProject
from qgis.PyQt.QtCore import QEventLoop, QTimer
from qgis.PyQt.QtWidgets import QAbstractScrollArea, QApplication, QToolButton
from qgis.utils import iface

args = json.loads(os.environ["DEEPRASTER_SHOT_ARGS"])
report = {"errors": []}


def settle(ms=600):
    """Let Qt lay out and paint for ``ms`` milliseconds."""
    loop = QEventLoop(); QTimer.singleShot(ms, loop.quit); loop.exec_()


def layout_of(dialog):
    """Horizontal scroll bars shown, and browse buttons outside the visible part of their scroll area."""
    bars = [a.objectName() or type(a).__name__ for a in dialog.findChildren(QAbstractScrollArea)
            if a.isVisible() and a.horizontalScrollBar().isVisible() and a.horizontalScrollBar().maximum() > 0]
    hidden = []
    for button in dialog.findChildren(QToolButton):
        if not button.isVisible() or button.text() not in ("…", "..."):
            continue
        area = button.parent()
        while area is not None and not isinstance(area, QAbstractScrollArea):
            area = area.parent()
        if area is None:
            continue
        viewport = area.viewport()
        corner = button.mapTo(viewport, button.rect().topRight())
        if corner.x() > viewport.width():
            hidden.append(button.toolTip() or button.objectName() or "browse button")
    return {"size": [dialog.width(), dialog.height()], "horizontal_scroll_bars": bars,
            "browse_buttons_out_of_view": hidden,
            "browse_buttons": sum(1 for b in dialog.findChildren(QToolButton) if b.isVisible()
                                  and b.text() in ("…", "..."))}


def shoot_dialog(algorithm, name):
    import processing
    print("SHOT", name, flush=True)
    dialog = processing.createAlgorithmDialog(algorithm)
    dialog.show(); settle(); dialog.raise_(); settle()
    report[name] = layout_of(dialog)
    dialog.grab().save(os.path.join(args["out"], f"{name}.png"))
    dialog.close(); dialog.deleteLater(); settle(100)


def shoot_layers():
    import processing
    print("SHOT layers", flush=True)
    processing.runAndLoadResults("deepraster:classify_pixels", {
        "INPUT": args["raster"], "MODEL": args["model"],
        "OUTPUT_CLASSES": os.path.join(args["work"], "s2_30m_classes.tif"),
        "OUTPUT_PROBABILITIES": os.path.join(args["work"], "s2_30m_probabilities.tif")})
    from qgis.core import QgsRasterLayer  # the scene under the outputs, for context
    scene = QgsRasterLayer(args["raster"], "s2_l1c_30m")
    QgsProject.instance().addMapLayer(scene, False)
    QgsProject.instance().layerTreeRoot().addLayer(scene)
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QDockWidget
    window = iface.mainWindow()
    for dock in window.findChildren(QDockWidget):  # the layer panel alone, wide enough for the layer names
        if dock.objectName() == "Browser":
            dock.hide()
        elif dock.objectName() == "Layers":
            window.resizeDocks([dock], [430], Qt.Horizontal)
    for node in QgsProject.instance().layerTreeRoot().findLayers():
        node.setExpanded(node.name().endswith("classes"))  # the class legend shown, the others folded
    settle()
    canvas = iface.mapCanvas()
    canvas.setExtent(scene.extent()); canvas.zoomByFactor(1.05); canvas.refreshAllLayers()
    loop = QEventLoop(); canvas.mapCanvasRefreshed.connect(loop.quit); QTimer.singleShot(15000, loop.quit)
    loop.exec_(); settle(800)
    report["layers"] = [n.name() for n in QgsProject.instance().layerTreeRoot().findLayers()]
    report["visible"] = [n.name() for n in QgsProject.instance().layerTreeRoot().findLayers() if n.isVisible()]
    iface.mainWindow().grab().save(os.path.join(args["out"], "layers.png"))


def main():
    try:
        iface.mainWindow().resize(1280, 1000); settle()
        for algorithm, name in args["dialogs"]:
            shoot_dialog(algorithm, name)
        if args["checks"]:
            import runpy
            report["checks"] = runpy.run_path(args["checks"])["run"](settle, args["checks_args"])
        if args["layers"]:
            shoot_layers()
    except Exception:
        report["errors"].append(traceback.format_exc())
    with open(os.path.join(args["out"], "layout.json"), "w") as f:
        json.dump(report, f, indent=1)
    QgsProject.instance().clear(); QgsProject.instance().setDirty(False)
    QTimer.singleShot(0, iface.actionExit().trigger)


QTimer.singleShot(500, main)
'''


DOCS_DIALOGS = (("deepraster:classify_pixels", "classify_dialog"), ("deepraster:install_packages", "installer_dialog"))


def take(out: Path, *, dialogs=DOCS_DIALOGS, layers: bool = True, raster: Path | None = None,
         model: Path | None = None, timeout_s: int = 300, checks: Path | None = None,
         checks_args: dict | None = None) -> dict:
    """Run QGIS under Xvfb, write the screenshots and ``layout.json`` into ``out`` and return the layout report:
    per dialog (``(algorithm id, picture name)`` pairs) its size, the horizontal scroll bars shown and the browse
    buttons out of view; with ``layers``, the layer tree after the classification. ``checks``: a Python file whose
    ``run(settle, checks_args)`` runs inside QGIS after the dialogs; what it returns is the report's ``checks``."""
    out.mkdir(parents=True, exist_ok=True)
    raster = raster or REPO / ".data" / "s2" / "s2_l1c_30m.tif"
    model = model or REPO / ".data" / "models" / "ukis-csmask-6b-l1c"
    xvfb = shutil.which("xvfb-run")
    if xvfb is None or not os.path.exists(QGIS):
        raise SystemExit("screenshots need xvfb-run and the QGIS desktop (bash scripts/setup.sh installs both)")
    with tempfile.TemporaryDirectory(prefix="deepraster-shots-") as tmp_name:
        tmp = Path(tmp_name)
        profiles = tmp / "profiles"
        ini = profiles / "profiles" / "default" / "QGIS" / "QGIS3.ini"
        ini.parent.mkdir(parents=True)
        ini.write_text("[PythonPlugins]\ndeepraster=true\n\n[core]\nshowNews=false\n", encoding="utf-8")
        script = tmp / "shots.py"
        script.write_text(DESKTOP_SCRIPT, encoding="utf-8")
        (tmp / "runtime").mkdir(mode=0o700)
        (tmp / "work").mkdir()
        site = next((REPO / ".venv" / "lib").glob("python3*/site-packages"))
        env = {k: v for k, v in os.environ.items() if k not in {"QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"}}
        # the system's python3 first: QGIS's embedded Python finds its standard library from the python3 on PATH
        env["PATH"] = "/usr/bin:/bin:" + env.get("PATH", "")
        env.update(QGIS_PLUGINPATH=str(REPO / ".build" / "plugins"), PYTHONPATH=str(site),
                   XDG_RUNTIME_DIR=str(tmp / "runtime"), QT_XCB_GL_INTEGRATION="xcb_glx",
                   DEEPRASTER_SHOT_ARGS=json.dumps({"out": str(out.resolve()), "raster": str(raster),
                                                    "model": str(model), "work": str(tmp / "work"),
                                                    "layers": layers, "dialogs": [list(d) for d in dialogs],
                                                    "checks": str(checks) if checks else None,
                                                    "checks_args": checks_args or {}}))
        command = [xvfb, "-a", "-s", f"-screen 0 {SCREEN} +extension GLX", QGIS, "--nologo", "--noversioncheck",
                   "--profiles-path", str(profiles), "--code", str(script)]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=tmp, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:  # a dialog waiting for a click: end QGIS and Xvfb (the session)
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            raise RuntimeError(f"QGIS did not quit within {timeout_s} s:\n{stdout[-3000:]}\n{stderr[-3000:]}") from exc
    report_path = out / "layout.json"
    if not report_path.is_file():
        raise RuntimeError(f"QGIS wrote no report (exit {proc.returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return json.loads(report_path.read_text(encoding="utf-8"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    report = take(args.out)
    print(json.dumps(report, indent=1))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
