"""The Esri Classified_Tiles files of an export carry the keys ArcGIS's own reader (arcgis.learn ``prepare_data``)
uses: classes, tile size and image space in the .emd, band names (``InputRastersProps``) and per-band statistics
(``AllTilesStats``) in the .emd, ``MetaDataMode``, ``ClassPixelStats`` and ``BandStatsState`` in
esri_accumulated_stats.json; and every form of band statistics an Esri folder may hold reads back."""

from __future__ import annotations

import json
import shutil

import numpy as np
from test_train_segmentation import chips  # noqa: F401 (the module's export fixture)

WELL_KNOWN = "WellKnownBandNames (FYI, these band names can be used in ExtractBands)"


def read(folder, name: str) -> dict:
    return json.loads((folder / name).read_text(encoding="utf-8"))


def test_export_writes_the_keys_arcgis_learn_reads(chips):  # noqa: F811
    manifest = read(chips, "manifest.json")
    emd, stats = read(chips, "esri_model_definition.emd"), read(chips, "esri_accumulated_stats.json")
    mean, std = manifest["statistics"]["mean"], manifest["statistics"]["std"]
    assert (emd["ImageHeight"], emd["ImageWidth"], emd["ExtractBands"]) == (32, 32, [0, 1, 2, 3])
    assert emd["MetaDataMode"] == stats["MetaDataMode"] == "Classified_Tiles" and emd["ImageSpaceUsed"] == "MAP_SPACE"
    assert {i["Value"]: i["Name"] for i in emd["Classes"]} == {0: "forest", 1: "water"}
    assert all(len(i["Color"]) == 3 for i in emd["Classes"])
    props = emd["InputRastersProps"]
    assert props["BandNames"] == ["B02", "B03", "B04", "B08"] and "SensorName" in props
    assert emd[WELL_KNOWN] == props["BandNames"]
    tiles = emd["AllTilesStats"]
    np.testing.assert_allclose([b["Mean"] for b in tiles], mean)
    np.testing.assert_allclose([b["StdDev"] for b in tiles], std)
    np.testing.assert_allclose([b["Min"] for b in tiles], manifest["statistics"]["min"])
    assert "BandStats" not in stats  # not an Esri key (Deep Raster wrote it before)
    assert (stats["NumTiles"], stats["NumBands"], stats["TileSizeX"], stats["NumClasses"]) == \
        (len(manifest["chips"]), 4, 32, 2)
    pixels = stats["ClassPixelStats"]
    assert pixels["NumClasses"] == 2 and pixels["NumImagesTotal"] == len(manifest["chips"])
    assert pixels["NumPixelsPerClass"] == [sum(manifest["pixel_counts"][s][str(v)] for s in ("train", "validation"))
                                           for v in (0, 1)]
    state = stats["BandStatsState"]
    assert all(b["Num"] == manifest["statistics"]["pixels"] for b in state)
    np.testing.assert_allclose([b["M1"] for b in state], mean)
    np.testing.assert_allclose([np.sqrt(b["M2"] / b["Num"]) for b in state], std)


def test_every_form_of_esri_band_statistics_reads_back(chips, tmp_path):  # noqa: F811
    from deepraster.training.chips import read_chip_folder

    manifest = read(chips, "manifest.json")
    esri = tmp_path / "esri"
    shutil.copytree(chips, esri)
    (esri / "manifest.json").unlink()
    emd, stats = read(esri, "esri_model_definition.emd"), read(esri, "esri_accumulated_stats.json")
    legacy = [{"BandName": n, "Mean": m, "StdDev": s} for n, m, s in
              zip(emd["InputRastersProps"]["BandNames"], manifest["statistics"]["mean"], manifest["statistics"]["std"],
                  strict=True)]
    forms = {"AllTilesStats": (emd, stats), "BandStatsState": ({k: v for k, v in emd.items()
                                                                 if k not in ("AllTilesStats", "InputRastersProps")},
                                                                stats),
             "BandStats (Deep Raster before)": ({k: v for k, v in emd.items()
                                                 if k not in ("AllTilesStats", "InputRastersProps")},
                                                {**{k: v for k, v in stats.items() if k != "BandStatsState"},
                                                 "BandStats": legacy})}
    for form, (e, s) in forms.items():
        (esri / "esri_model_definition.emd").write_text(json.dumps(e), encoding="utf-8")
        (esri / "esri_accumulated_stats.json").write_text(json.dumps(s), encoding="utf-8")
        folder = read_chip_folder(esri)
        np.testing.assert_allclose(folder.mean, manifest["statistics"]["mean"], err_msg=form)
        np.testing.assert_allclose(folder.std, manifest["statistics"]["std"], rtol=1e-9, err_msg=form)
        assert folder.bands == ([] if form == "BandStatsState" else ["B02", "B03", "B04", "B08"]), form
