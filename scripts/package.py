"""Build the installable plugin zip: dist/deepraster-<version>.zip holding the folder deepraster/.

Only what the plugin needs at run time goes in (no tests, benchmarks, scripts or dev files); the version comes from
metadata.txt. Install it in QGIS with Plugins → Manage and Install Plugins → Install from ZIP.
"""

from __future__ import annotations

import configparser
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "deepraster"
FILES = ("metadata.txt", "__init__.py", "plugin.py", "provider.py", "LICENSE", "README.md", "docs/model-package.md",
         "docs/feature-space-analysis.md", "docs/feature-extraction.md", "docs/architecture.md", "docs/installer.md",
         "requirements.txt", "constraints.txt")  # the installer reads the pinned requirements and constraints
FOLDERS = ("algorithms", "models", "analysis", "training", "objects", "scale", "tiling", "installer", "icons")
SKIP_SUFFIXES = (".pyc", ".pyo")


def plugin_files() -> list[Path]:
    """Paths (relative to the repository root) that belong in the zip, sorted."""
    files = [Path(f) for f in FILES]
    for folder in FOLDERS:
        files += [p.relative_to(ROOT) for p in (ROOT / folder).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix not in SKIP_SUFFIXES]
    missing = [str(f) for f in files if not (ROOT / f).is_file()]
    if missing:
        raise SystemExit(f"package: missing files: {', '.join(missing)}")
    return sorted(files)


def main() -> Path:
    meta = configparser.ConfigParser()
    meta.read(ROOT / "metadata.txt", encoding="utf-8")
    version = meta["general"]["version"]
    out = ROOT / "dist" / f"{PLUGIN}-{version}.zip"
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".zip.partial")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for rel in plugin_files():
            z.write(ROOT / rel, f"{PLUGIN}/{rel.as_posix()}")
    tmp.replace(out)
    print(f"package: {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return out


if __name__ == "__main__":
    main()
