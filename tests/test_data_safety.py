"""Issue 12, data safety: every destination of a run checked together before any work (writable, distinct from
each other and from every input, right extension), stale partial files of killed runs removed, a second run to
the same output refused. Core checks first, then through QGIS."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
from pathlib import Path

import pytest
from analysis_scene import private_config, run, scene
from deepraster.tiling.destinations import Destination, check_destinations, partial_files, reserve_destinations
from deepraster.tiling.errors import OutputError
from osgeo import gdal

__all__ = ["private_config", "scene"]  # fixtures used by the tests below


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@contextlib.contextmanager
def read_only(folder: Path):
    """A folder nobody can write in, root included (immutable flag), or a skip where that cannot be set."""
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    if not done:
        folder.chmod(0o555)
        probe = folder / ".probe"
        try:
            probe.touch()
            probe.unlink()
            folder.chmod(0o755)
            pytest.skip("cannot make a read-only folder here")
        except PermissionError:
            pass
    try:
        yield folder
    finally:
        if done:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


# ------------------------------------------------------------------------------------------------ core
def test_output_equal_to_input_refused(tmp_path):
    raster = tmp_path / "in.tif"
    raster.write_bytes(b"x")
    link = tmp_path / "link.tif"
    link.symlink_to(raster)
    for path in (raster, link, tmp_path / "." / "in.tif"):
        with pytest.raises(OutputError, match="would overwrite the input .*Choose another file name"):
            check_destinations([Destination(path, "classes", "geotiff")], [raster])


def test_model_sidecar_is_an_input_too(tmp_path):
    model = tmp_path / "m.joblib"
    model.write_bytes(b"x")
    with pytest.raises(OutputError, match="would overwrite the input"):
        check_destinations([Destination(tmp_path / "m.joblib.json", "report")], [model])


def test_two_destinations_same_file_refused(tmp_path):
    with pytest.raises(OutputError, match="probabilities are both .*Give each output its own file name"):
        check_destinations([Destination(tmp_path / "a.tif", "classes", "geotiff"),
                            Destination(tmp_path / "a.tif", "probabilities", "geotiff")])


@pytest.mark.parametrize("name", ["out.png", "out.jpg", "out", "out.TIF.png"])
def test_wrong_extension_refused(tmp_path, name):
    with pytest.raises(OutputError, match=r"written as a GeoTIFF.*Name it out.*\.tif"):
        check_destinations([Destination(tmp_path / name, "classes", "geotiff")])
    check_destinations([Destination(tmp_path / "out.TIFF", "classes", "geotiff")])


def test_unwritable_places_refused(tmp_path):
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_destinations([Destination(file / "out.tif", "classes", "geotiff")])
    (tmp_path / "dir.tif").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        check_destinations([Destination(tmp_path / "dir.tif", "classes", "geotiff")])
    folder = tmp_path / "ro"
    folder.mkdir()
    with read_only(folder), pytest.raises(OutputError, match="no permission to write in the folder"):
        check_destinations([Destination(folder / "m.joblib", "fitted model")])
    model = tmp_path / "m.joblib"
    model.write_bytes(b"older model")
    (tmp_path / "m.joblib.json").write_text("{}")
    with locked(tmp_path / "m.joblib.json"), pytest.raises(OutputError, match=r"Cannot replace .*m\.joblib\.json"):
        check_destinations([Destination(model, "fitted model")])
    with pytest.raises(OutputError, match="the folder .*new does not exist. Choose an existing folder"):
        check_destinations([Destination(tmp_path / "new" / "out.tif", "classes", "geotiff")])
    assert not (tmp_path / "new").exists()


def test_stale_partials_removed_resumable_kept(tmp_path):
    target = tmp_path / "out.tif"
    stale = [tmp_path / ".out.tif.1234abcd.partial.tif", tmp_path / ".out.tif.1234abcd.partial.tif.aux.xml"]
    resumable = tmp_path / ".out.tif.feedfacecafe0001.partial.tif"
    state = tmp_path / ".out.tif.resume.json"
    other = tmp_path / ".other.tif.1234abcd.partial.tif"
    for p in (*stale, resumable, other):
        p.write_bytes(b"x")
    state.write_text(f'{{"temp": "{resumable.name}"}}')
    assert partial_files(target) == sorted(stale)
    with reserve_destinations([Destination(target, "features", "geotiff")]):
        assert not any(p.exists() for p in stale)
    assert resumable.exists() and state.exists() and other.exists()
    assert not (tmp_path / ".out.tif.lock").exists()


def test_second_run_to_same_output_refused(tmp_path):
    dest = [Destination(tmp_path / "f.tif", "feature raster", "geotiff")]
    with reserve_destinations(dest):
        second = reserve_destinations(dest)
        with pytest.raises(OutputError, match="Another run is writing the feature raster"):
            second.__enter__()
    with reserve_destinations(dest):  # released
        pass


# ------------------------------------------------------------------------------------------------ QGIS
def test_apply_model_output_is_input(qgis_app, scene, tmp_path):
    from qgis.core import QgsProcessingException

    model = tmp_path / "m.joblib"
    run("cluster_pixels", {"INPUT": scene["raster"], "N_CLUSTERS": 3, "SAMPLE_SIZE": 500,
                           "OUTPUT": str(tmp_path / "c.tif"), "OUTPUT_MODEL": str(model)})
    copy = tmp_path / "in.tif"
    copy.write_bytes(Path(scene["raster"]).read_bytes())
    before = digest(copy)
    with pytest.raises(QgsProcessingException, match="would overwrite the input"):
        run("apply_model", {"INPUT": str(copy), "MODEL": str(model), "OUTPUT": str(copy)})
    assert digest(copy) == before
    with pytest.raises(QgsProcessingException, match="would overwrite the input"):
        run("apply_model", {"INPUT": str(copy), "MODEL": str(model), "OUTPUT": str(model) + ".json"})


def test_train_classifier_same_path_for_two_outputs(qgis_app, scene, tmp_path):
    from qgis.core import QgsProcessingException

    out = tmp_path / "o.tif"
    with pytest.raises(QgsProcessingException, match="both .*o.tif: one would be lost"):
        run("train_classifier", {"INPUT": scene["raster"], "TRAINING": scene["training"], "LABEL_FIELD": "fclass",
                                 "KWARGS": '{"n_estimators": 5}', "OUTPUT": str(out),
                                 "OUTPUT_PROBABILITIES": str(out)})
    assert not out.exists()


def test_model_name_and_its_sidecar_are_checked(qgis_app, scene, tmp_path):
    """A fitted model is named .joblib (its description goes to <name>.joblib.json), and a report on that sidecar
    is refused naming the sidecar: the report was silently replaced by the model's description before."""
    from qgis.core import QgsProcessingException

    params = {"INPUT": scene["raster"], "TRAINING": scene["training"], "LABEL_FIELD": "fclass",
              "KWARGS": '{"n_estimators": 5}', "OUTPUT": str(tmp_path / "c.tif")}
    with pytest.raises(QgsProcessingException, match=r"written as a \.joblib file.*Name it m\.joblib"):
        run("train_classifier", {**params, "OUTPUT_MODEL": str(tmp_path / "m.pkl")})
    with pytest.raises(QgsProcessingException, match=r"are both (written to )?.*m\.joblib\.json: one would be lost"):
        run("train_classifier", {**params, "OUTPUT_MODEL": str(tmp_path / "m.joblib"),
                                 "OUTPUT_REPORT_JSON": str(tmp_path / "m.joblib.json")})
    assert not list(tmp_path.iterdir())


def test_png_output_refused(qgis_app, scene, tmp_path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match=r"written as a GeoTIFF.*Name it c\.tif"):
        run("cluster_pixels", {"INPUT": scene["raster"], "SAMPLE_SIZE": 500, "OUTPUT": str(tmp_path / "c.png")})
    assert not list(tmp_path.iterdir())


def test_model_in_read_only_folder_leaves_earlier_outputs(qgis_app, scene, tmp_path):
    from qgis.core import QgsProcessingException

    folder = tmp_path / "ro"
    folder.mkdir()
    out = tmp_path / "c.tif"
    params = {"INPUT": scene["raster"], "N_CLUSTERS": 3, "SAMPLE_SIZE": 500, "OUTPUT": str(out)}
    run("cluster_pixels", params)
    before, listing = digest(out), sorted(tmp_path.iterdir())
    with read_only(folder), pytest.raises(QgsProcessingException, match="no permission to write in the folder"):
        run("cluster_pixels", {**params, "N_CLUSTERS": 4, "OUTPUT_MODEL": str(folder / "m.joblib")})
    assert digest(out) == before
    assert sorted(tmp_path.iterdir()) == listing and not list(folder.iterdir())


@contextlib.contextmanager
def locked(path: Path):
    """A file nobody can replace or write, root included (immutable flag); skip where that cannot be set."""
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("cannot lock a file here")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_inspect_with_json_locked_keeps_html(qgis_app, model_6b_l1c, tmp_path):
    from qgis.core import QgsProcessingException

    html, report = tmp_path / "r.html", tmp_path / "r.json"
    html.write_text("older html")
    report.write_text("{}")
    params = {"MODEL": str(model_6b_l1c), "DRY_RUN": False, "OUTPUT_HTML": str(html), "OUTPUT_JSON": str(report)}
    with locked(report), pytest.raises(QgsProcessingException, match="Cannot replace the report .*r.json.*locked"):
        run("inspect_package", params)
    assert html.read_text() == "older html"
    with locked(tmp_path), pytest.raises(QgsProcessingException, match="no permission to write in the folder"):
        run("inspect_package", params)
    assert run("inspect_package", params)["STATUS"] == "valid"
    assert html.read_text() != "older html"


def test_train_classifier_report_unwritable(qgis_app, scene, tmp_path):
    from qgis.core import QgsProcessingException

    folder = tmp_path / "ro"
    folder.mkdir()
    out = tmp_path / "o.tif"
    out.write_bytes(b"older prediction")
    params = {"INPUT": scene["raster"], "TRAINING": scene["training"], "LABEL_FIELD": "fclass",
              "KWARGS": '{"n_estimators": 5}', "OUTPUT": str(out), "OUTPUT_REPORT": str(folder / "r.html")}
    with read_only(folder), pytest.raises(QgsProcessingException, match="no permission to write in the folder"):
        run("train_classifier", params)
    assert out.read_bytes() == b"older prediction"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.tif", "ro"]


def test_run_to_an_output_another_run_is_writing_is_refused(qgis_app, scene, tmp_path):
    """Item 16: the second run to an output stops before touching the first run's temporary file."""
    from qgis.core import QgsProcessingException

    out = tmp_path / "c.tif"
    first_temp = tmp_path / ".c.tif.0123456789abcdef.partial.tif"
    with reserve_destinations([Destination(out, "features", "geotiff")]):  # the first run, still writing
        first_temp.write_bytes(b"rows of the first run")
        with pytest.raises(QgsProcessingException, match="Another run is writing the clusters"):
            run("cluster_pixels", {"INPUT": scene["raster"], "SAMPLE_SIZE": 500, "OUTPUT": str(out)})
        assert first_temp.read_bytes() == b"rows of the first run"
    assert not out.exists()


def test_model_that_cannot_be_written_leaves_the_older_raster(qgis_app, scene, tmp_path, monkeypatch):
    """Item 2: the raster is finished before the model is written; a failing model write (a full disk) must not
    leave the new raster in place of the older one: a run's outputs are renamed together at its end."""
    from deepraster.analysis import trust
    from qgis.core import QgsProcessingException

    out = tmp_path / "c.tif"
    out.write_bytes(b"older clusters")

    def disk_full(path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trust, "sha256_of", disk_full)
    with pytest.raises(QgsProcessingException, match="Cannot write the model .*No space left on device"):
        run("cluster_pixels", {"INPUT": scene["raster"], "N_CLUSTERS": 3, "SAMPLE_SIZE": 500, "OUTPUT": str(out),
                               "OUTPUT_MODEL": str(tmp_path / "m.joblib")})
    assert out.read_bytes() == b"older clusters"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tif"]


def test_create_package_destination_unwritable(qgis_app, tmp_path):
    """Item 4: an unwritable package destination is a message before any work, not a PermissionError traceback."""
    from qgis.core import QgsProcessingException

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"not read: the destination is checked first")
    folder = tmp_path / "ro"
    folder.mkdir()
    with read_only(folder), pytest.raises(QgsProcessingException, match="no permission to write in the folder"):
        run("create_package", {"WEIGHTS": str(weights), "BANDS": "B04, B03, B02",
                               "CLASSES": [0, "other", "#000000", 1, "coral", "#ff7f50"],
                               "NAME": "test", "LICENSE": "CC-BY-4.0", "OUTPUT": str(folder / "p.drpk")})
    assert not list(folder.iterdir())


def test_files_an_input_is_made_of_are_inputs_too(tmp_path):
    """A VRT's source raster and a raster's sidecars cannot be overwritten through the VRT or the raster."""
    source = tmp_path / "source.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(source), 4, 4, 1, gdal.GDT_Byte)
    ds.SetGeoTransform((0, 1, 0, 4, 0, -1))
    ds = None
    vrt = tmp_path / "mosaic.vrt"
    gdal.BuildVRT(str(vrt), [str(source)]).FlushCache()
    (tmp_path / "source.tif.aux.xml").write_text("<PAMDataset/>")
    with pytest.raises(OutputError, match=r"would overwrite the input .*mosaic\.vrt \(.*source\.tif is one of the "
                                          r"files it is made of\)"):
        check_destinations([Destination(source, "classes", "geotiff")], [vrt])
    with pytest.raises(OutputError, match="would overwrite the input .*source.tif"):
        check_destinations([Destination(tmp_path / "source.tif.aux.xml", "report")], [source])
    check_destinations([Destination(tmp_path / "other.tif", "classes", "geotiff")], [vrt])
    model = tmp_path / "model.json"  # not a raster: the file alone
    model.write_text("{}")
    check_destinations([Destination(tmp_path / "other.tif", "classes", "geotiff")], [model])
