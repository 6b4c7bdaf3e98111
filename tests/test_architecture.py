"""The package rules of docs/architecture.md, checked on the source: one concept per package, QGIS only in the
adapters, and files small enough to read.

- ``tiling/`` (engine and raster I/O) and ``installer/`` (pip into the profile) import no other package of ours and
  no qgis;
- ``models/`` (deep-model packages) and ``analysis/`` (scikit-learn analysis) import ``tiling/`` only, never each
  other, never qgis;
- ``training/`` (chips, their split, the training loop) imports ``tiling/``, ``models/`` (packages, encoders),
  ``analysis/`` (metrics) and ``objects/`` (a feature's chip exactly as Classify objects reads it) only, never qgis;
- ``objects/`` (object detection) imports ``tiling/`` and ``models/`` only, never qgis;
- ``scale/`` (pieces on a Dask cluster) imports ``tiling/``, ``models/``, ``objects/`` (detection
  pieces) and ``installer/`` (QGIS's Python for the workers) only, never qgis;
- every Python file of the plugin and its tests has at most 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("tiling", "models", "analysis", "training", "objects", "scale", "algorithms", "installer")
ALLOWED = {"tiling": set(), "models": {"tiling"}, "analysis": {"tiling"},
           "training": {"tiling", "models", "analysis", "objects"}, "objects": {"tiling", "models"},
           "scale": {"tiling", "models", "objects", "installer"}, "installer": set()}
MAX_LINES = 400


def imported_modules(path: Path) -> set[str]:
    """Top-level names of what ``path`` imports: ``qgis``, ``numpy``, or our packages (``tiling`` ...) for
    relative imports resolved against the file's place in the repository."""
    package = path.relative_to(REPO).parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names.add((node.module or "").split(".")[0])
                continue
            base = package[: len(package) - node.level + 1]
            target = (*base, *(node.module.split(".") if node.module else ()))
            if target:
                names.add(target[0])
            else:  # "from .. import x" at the top: x are our packages
                names.update(alias.name for alias in node.names)
    return names


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_follow_the_rules(package):
    offences = []
    for path in python_files(package):
        imported = imported_modules(path)
        ours = imported & set(OURS)
        for name in sorted(ours - ALLOWED[package] - {package}):
            offences.append(f"{path.relative_to(REPO)} imports {name}/")
        if "qgis" in imported:
            offences.append(f"{path.relative_to(REPO)} imports qgis")
    assert not offences, "; ".join(offences)


def test_the_rule_checker_sees_relative_imports(tmp_path):
    """The checker resolves ``from ..models.x import y`` and ``from .. import models`` (a rule that sees nothing
    would pass everything)."""
    path = REPO / "analysis" / "pipeline.py"
    assert {"tiling", "numpy"} <= imported_modules(path)
    assert "analysis" in imported_modules(REPO / "algorithms" / "train_classifier.py")
    assert "qgis" in imported_modules(REPO / "algorithms" / "base.py")


def test_every_file_is_at_most_400_lines():
    files = [REPO / name for name in ("__init__.py", "plugin.py", "provider.py")]
    files += python_files("tiling", "models", "analysis", "training", "objects", "scale", "algorithms", "installer",
                          "tests", "bench", "scripts")
    long = {str(p.relative_to(REPO)): n for p in files if (n := len(p.read_text(encoding="utf-8").splitlines()))
            > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines (split them by concept): {long}"


def test_cited_documents_exist():
    """Every ``docs/<name>.md`` that a source or test file cites is in the repository."""
    import re

    missing = set()
    for path in python_files("tiling", "models", "analysis", "training", "objects", "scale", "algorithms",
                             "installer", "tests", "bench", "scripts"):
        for name in re.findall(r"docs/([\w.-]+\.md)", path.read_text(encoding="utf-8")):
            if not (REPO / "docs" / name).exists():
                missing.add(f"{path.relative_to(REPO)} cites docs/{name}")
    assert not missing, "; ".join(sorted(missing))


def test_plugin_zip_carries_every_package():
    """scripts/package.py ships every Python package of the plugin (a package left out breaks its algorithms
    for users who install the zip, while every test run from the repository passes)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("package_script", REPO / "scripts" / "package.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "bench", "scripts"}
    assert packages <= set(script.FOLDERS), f"not in the zip: {sorted(packages - set(script.FOLDERS))}"
