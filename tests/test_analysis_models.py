"""Fitted analysis models without QGIS: reduction, clustering, similarity, and saving/loading with a signature
(models/reduction.py, clustering.py, similarity.py, fitted.py, trust.py)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from deepraster.models.clustering import fit_clusterer
from deepraster.models.estimators import REDUCTION, make_estimator
from deepraster.models.fitted import FittedModel
from deepraster.models.ml_errors import EstimatorError, ModelFileError
from deepraster.models.reduction import fit_reducer
from deepraster.models.similarity import class_prototypes, cosine_similarity, similarity_function, threshold_classes
from deepraster.models.supervised import TrainingSet, train_model
from deepraster.models.trust import check_compatible, load_model, save_model, sidecar_path, verify
from deepraster.models.validation import ValidationPlan
from deepraster.tiling.outputs import ClassInfo
from deepraster.tiling.pixelwise import map_pixels, sample_valid_pixels
from deepraster.tiling.reader import RasterSource
from helpers import smooth_field, write_blocked_raster
from osgeo import gdal

BANDS = ("b1", "b2", "b3", "b4")


@pytest.fixture(autouse=True)
def private_config(tmp_path_factory, monkeypatch):
    """Signing secrets go to a temporary folder, never to the user's configuration."""
    monkeypatch.setenv("DEEPRASTER_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))


def blobs(n: int = 600, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0, 0, 0], [5, 5, 0, 0], [0, 5, 5, 5]], np.float32)
    return (centres[np.arange(n) % 3] + rng.normal(0, 0.3, (n, 4))).astype(np.float32)


def test_pca_streamed_equals_sklearn_on_the_whole_array(tmp_path):
    """Fit on a sample, transform window by window: equal to sklearn's PCA applied to the whole array."""
    data = smooth_field(4, 200, 260, seed=1)
    data[:, 10:30, 10:40] = 0
    source = RasterSource.open(str(write_blocked_raster(tmp_path / "in.tif", data, block=32, nodata=0)))
    sample = sample_valid_pixels(source, [1, 2, 3, 4], 3000, seed=5)
    fitted = fit_reducer(sample.values, make_estimator(REDUCTION, "PCA", None, seed=5, size=(3, ("n_components",))),
                         BANDS)
    out = tmp_path / "pca.tif"
    map_pixels(source, [1, 2, 3, 4], fitted.pixel_function(), [fitted.main_output(str(out))], budget_bytes=20_000)
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(sample.values)
    pca = PCA(3, random_state=5).fit(scaler.transform(sample.values))
    valid = (data != 0).all(axis=0)
    pixels = data.reshape(4, -1).T[valid.ravel()].astype(np.float32)
    expected = pca.transform(scaler.transform(pixels))
    ds = gdal.Open(str(out))
    result = ds.ReadAsArray()
    np.testing.assert_allclose(result[:, valid].T, expected, rtol=1e-4, atol=1e-4)
    assert np.isnan(result[:, ~valid]).all()
    assert [ds.GetRasterBand(i + 1).GetDescription() for i in range(3)] == ["PCA 1", "PCA 2", "PCA 3"]
    assert fitted.notes["explained_variance_ratio"][0] > 0.3


def test_tsne_maps_other_pixels_by_nearest_neighbours():
    x = blobs(300)
    fitted = fit_reducer(x, make_estimator(REDUCTION, "TSNE", '{"perplexity": 20}', seed=0,
                                           size=(2, ("n_components",))), BANDS)
    assert fitted.method == "predict" and "nearest sample pixels" in fitted.notes["out_of_sample"]
    fn = fitted.pixel_function()
    embedding = fitted.estimator.named_steps["map"]._y
    np.testing.assert_allclose(fn(x), embedding, atol=1e-5)  # sample pixels map onto their own embedding
    new = blobs(90, seed=9)
    mapped = fn(new)
    assert mapped.shape == (90, 2) and np.isfinite(mapped).all()
    # a new pixel lands among the embeddings of its own blob
    for k in range(3):
        own = embedding[np.arange(300) % 3 == k].mean(axis=0)
        others = [embedding[np.arange(300) % 3 == j].mean(axis=0) for j in range(3) if j != k]
        d = np.linalg.norm(mapped[np.arange(90) % 3 == k] - own, axis=1).mean()
        assert all(d < np.linalg.norm(own - o) / 2 for o in others)


def test_kmeans_labels_and_classes():
    x = blobs()
    fitted = fit_clusterer(x, make_estimator("cluster", "KMeans", None, seed=0, size=(3, ("n_clusters",))), BANDS)
    labels = fitted.pixel_function()(x).ravel()
    assert labels.dtype == np.uint8 and len(set(labels.tolist())) == 3
    assert [c.value for c in fitted.classes] == [0, 1, 2] and fitted.noise is None
    for k in range(3):  # each blob is one cluster
        assert len(set(labels[np.arange(600) % 3 == k].tolist())) == 1


def test_dbscan_noise_and_nearest_sample_rule():
    x = np.vstack([blobs(), np.array([[50, 50, 50, 50]], np.float32)])  # one far outlier: noise
    built = make_estimator("cluster", "DBSCAN", '{"eps": 0.5}')
    fitted = fit_clusterer(x, built, BANDS, standardize=False)
    assert "nearest sample pixel" in fitted.notes["out_of_sample"]
    assert fitted.noise == ClassInfo(3, "noise", fitted.noise.rgb)
    assert fitted.notes["sample_cluster_sizes"]["noise"] >= 1
    fn = fitted.pixel_function()
    assert fn(np.array([[49, 49, 49, 49]], np.float32))[0, 0] == 3  # nearest sample pixel is noise
    assert fn(np.array([[5.1, 4.9, 0, 0]], np.float32))[0, 0] in (0, 1, 2)
    as_nodata = fit_clusterer(x, built, BANDS, standardize=False, noise_as_nodata=True)
    assert as_nodata.noise is None
    assert as_nodata.pixel_function()(np.array([[49, 49, 49, 49]], np.float32))[0, 0] == 255
    with pytest.raises(EstimatorError, match="found no cluster"):
        fit_clusterer(x, make_estimator("cluster", "DBSCAN", '{"eps": 1e-6, "min_samples": 5}'), BANDS)


def test_gaussian_mixture():
    fitted = fit_clusterer(blobs(), make_estimator("cluster", "gmm", None, seed=0,
                                                   size=(3, ("n_clusters", "n_components"))), BANDS)
    assert len(fitted.classes) == 3 and fitted.estimator.named_steps["cluster"].n_components == 3


def test_fit_errors_are_explained():
    with pytest.raises(EstimatorError, match=r"NMF could not be fitted on the sample of 600 pixels: Negative values"):
        fit_reducer(blobs() - 10, make_estimator(REDUCTION, "NMF", None), BANDS, standardize=False)


def test_cosine_similarity_and_threshold():
    refs = np.array([[1, 0, 0], [2, 0, 0], [0, 1, 0]], np.float32)
    protos = class_prototypes(refs, ["a", "a", "b"])
    assert protos.names == ("a", "b") and protos.counts == (2, 1)
    px = np.array([[3, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0], [-1, 0, 0]], np.float32)
    sim = cosine_similarity(px, protos)
    np.testing.assert_allclose(sim[0], [1, 0], atol=1e-6)
    np.testing.assert_allclose(sim[1], [np.sqrt(0.5)] * 2, atol=1e-6)
    np.testing.assert_allclose(sim[4], [-1, 0], atol=1e-6)
    assert np.isnan(sim[3]).all()  # a zero vector has no direction
    classes = threshold_classes(sim, 0.9).ravel()
    assert classes.tolist() == [1, 0, 0, 255, 0]
    both = similarity_function(protos, 0.5)(px)
    assert both[1].ravel().tolist() == [1, 1, 0, 255, 0]
    centred = class_prototypes(refs, ["a", "a", "b"], center=np.array([1, 0, 0]))
    np.testing.assert_allclose(cosine_similarity(np.array([[3, 0, 0]], np.float32), centred)[0, 0], 1.0, atol=1e-6)


def classifier(tmp_path) -> FittedModel:
    rng = np.random.default_rng(0)
    x = blobs()
    data = TrainingSet(x, np.array(["a", "b", "c"] * 200, dtype=object), np.arange(600) // 20,
                       rng.uniform(0, 1000, (600, 2)))
    fitted, _ = train_model(data, "classification", make_estimator("classifier", "RandomForest",
                                                                   '{"n_estimators": 5}', seed=0),
                            ValidationPlan("none"), BANDS)
    return fitted


def test_save_and_load_round_trip(tmp_path):
    fitted = classifier(tmp_path)
    path = save_model(fitted, tmp_path / "m.joblib")
    meta = json.loads(sidecar_path(path).read_text())
    assert meta["kind"] == "classifier" and meta["band_names"] == list(BANDS) and len(meta["hmac_sha256"]) == 64
    assert [c["name"] for c in meta["classes"]] == ["a", "b", "c"]
    loaded, warnings = load_model(path)
    assert warnings == [] and loaded.classes == fitted.classes and loaded.band_names == BANDS
    x = blobs(30, seed=3)
    np.testing.assert_array_equal(loaded.pixel_function()(x), fitted.pixel_function()(x))
    key = os.path.join(os.environ["DEEPRASTER_CONFIG_DIR"], "secret.key")  # the per-user secret, private
    assert os.stat(key).st_size == 32 and os.stat(key).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("damage", ["model", "sidecar", "other_user", "no_sidecar"])
def test_untrusted_files_are_refused(tmp_path, monkeypatch, damage):
    fitted = classifier(tmp_path)
    path = save_model(fitted, tmp_path / "m.joblib")
    side = sidecar_path(path)
    if damage == "model":
        path.write_bytes(path.read_bytes() + b"\0")
    elif damage == "sidecar":
        meta = json.loads(side.read_text())
        meta["classes"][0]["name"] = "renamed"
        side.write_text(json.dumps(meta))
    elif damage == "other_user":
        monkeypatch.setenv("DEEPRASTER_CONFIG_DIR", str(tmp_path / "someone-else"))
    else:
        side.unlink()
    reason = {"model": "changed after it was saved", "sidecar": "signature does not match",
              "other_user": "signature does not match", "no_sidecar": "no sidecar"}[damage]
    assert not verify(path)[0]
    with pytest.raises(ModelFileError, match=rf"not trusted: .*{reason}.*pickles: loading one runs any code"):
        load_model(path)
    if damage != "model":  # a trusted file still loads, with a warning (the appended byte breaks the pickle itself)
        loaded, warnings = load_model(path, trusted=True)
        assert loaded.kind == "classifier" and any("trusted" in w or "guessed" in w for w in warnings)


def test_trusted_foreign_estimator_is_inferred(tmp_path):
    import joblib
    from sklearn.neighbors import KNeighborsClassifier

    x = blobs()
    est = KNeighborsClassifier(3).fit(x, np.array([10, 20, 30] * 200))
    joblib.dump(est, tmp_path / "foreign.joblib")
    with pytest.raises(ModelFileError, match="no sidecar"):
        load_model(tmp_path / "foreign.joblib")
    loaded, _ = load_model(tmp_path / "foreign.joblib", trusted=True)
    assert [c.value for c in loaded.classes] == [10, 20, 30]
    assert loaded.pixel_function()(x[:3]).ravel().tolist() == [10, 20, 30]


def test_band_checks(tmp_path):
    fitted = classifier(tmp_path)
    with pytest.raises(ModelFileError, match=r"expects 4 bands \(b1, b2, b3, b4\) but 3 were chosen"):
        check_compatible(fitted, ("b1", "b2", "b3"))
    assert check_compatible(fitted, BANDS) == []
    assert "b2 for b1" in check_compatible(fitted, ("b2", "b1", "b3", "b4"))[0]
