"""Fitted analysis models without QGIS: reduction, clustering, similarity, and saving/loading with a signature
(analysis/reduction.py, clustering.py, similarity.py, fitted.py, trust.py)."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
from deepraster.analysis.clustering import fit_clusterer
from deepraster.analysis.errors import EstimatorError, ModelFileError
from deepraster.analysis.estimators import REDUCTION, make_estimator
from deepraster.analysis.fitted import FittedModel
from deepraster.analysis.reduction import fit_reducer
from deepraster.analysis.similarity import class_prototypes, cosine_similarity, similarity_function, threshold_classes
from deepraster.analysis.supervised import TrainingSet, train_model
from deepraster.analysis.trust import check_compatible, load_model, save_model, sidecar_path, verify
from deepraster.analysis.validation import ValidationPlan
from deepraster.tiling.outputs import ClassInfo
from deepraster.tiling.pixel_sampling import sample_valid_pixels
from deepraster.tiling.pixelwise import map_pixels
from deepraster.tiling.source import RasterSource
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


def counted_predict(estimator) -> list[int]:
    """Wrap the ``predict`` of ``estimator`` (a Pipeline's last step) to record how many pixels each call gets."""
    calls: list[int] = []
    original = estimator.predict

    def predict(x):
        calls.append(len(x))
        return original(x)

    estimator.predict = predict
    return calls


@pytest.fixture(scope="module")
def land_cover(tmp_path_factory):
    """A generated 4-band raster with a nodata block, and training pixels labelled by the brightest of bands 1–3."""
    folder = tmp_path_factory.mktemp("land_cover")
    data = smooth_field(4, 96, 120, seed=3)
    data[:, 70:, :25] = 0
    raster = write_blocked_raster(folder / "in.tif", data, block=32, nodata=0)
    sample = sample_valid_pixels(RasterSource.open(str(raster)), [1, 2, 3, 4], 500, seed=1)
    rng = np.random.default_rng(2)
    labels = np.array(["a", "b", "c"], dtype=object)[np.argmax(sample.values[:, :3], axis=1)]
    labels[rng.random(len(labels)) < 0.1] = "c"  # some label noise: overlapping classes, uncertain pixels
    xy = np.stack([sample.cols, sample.rows], axis=1).astype(np.float64)
    return raster, TrainingSet(sample.values, labels, np.arange(len(labels)) // 10, xy)


SHORTCUT = [("RandomForest", '{"n_estimators": 4}'), ("ExtraTrees", '{"n_estimators": 4}'),
            ("DecisionTreeClassifier", '{"max_depth": 4}'), ("KNN", None), ("KNN", '{"weights": "distance"}'),
            ("GradientBoosting", '{"n_estimators": 20}'), ("HistGradientBoosting", '{"max_iter": 20}'),
            ("LogisticRegression", None), ("MLP", '{"hidden_layer_sizes": [8], "max_iter": 300}'),
            ("GaussianNB", None)]


@pytest.mark.parametrize("binary", [False, True], ids=["3 classes", "2 classes"])
@pytest.mark.parametrize(("name", "kwargs"), [*SHORTCUT, ("SVC", '{"probability": true}')],
                         ids=[n + ("-distance" if k and "distance" in k else "") for n, k in SHORTCUT] + ["SVC"])
def test_probabilities_give_the_classes_of_predict_without_calling_it(land_cover, tmp_path, name, kwargs, binary):
    """With the probability output, classes of argmax classifiers come from the probabilities (predict is not
    called; RandomForest with 4 trees has many tied probabilities): the class raster is identical to predict's.
    SVC's probabilities are calibrated apart from its predict, so SVC still calls predict."""
    raster, train = land_cover
    if binary:
        train = TrainingSet(train.X, np.where(train.y == "a", "a", "other").astype(object), train.groups, train.xy)
    built = make_estimator("classifier", name, kwargs, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of the small MLP / logistic regression
        fitted, _ = train_model(train, "classification", built, ValidationPlan("none"), BANDS)
    source = RasterSource.open(str(raster))
    map_pixels(source, [1, 2, 3, 4], fitted.pixel_function(), [fitted.main_output(str(tmp_path / "predict.tif"))],
               budget_bytes=20_000)
    calls = counted_predict(fitted.estimator.steps[-1][1])
    map_pixels(source, [1, 2, 3, 4], fitted.pixel_function(probabilities=True),
               [fitted.main_output(str(tmp_path / "shortcut.tif")), fitted.probability_output(str(tmp_path / "p.tif"))],
               budget_bytes=20_000)
    expected = gdal.Open(str(tmp_path / "predict.tif")).ReadAsArray()
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "shortcut.tif")).ReadAsArray(), expected)
    assert len(np.unique(expected)) == (3 if binary else 4)  # every class (and nodata) occurs
    if name == "SVC":
        assert sum(calls) == int((expected != 255).sum())  # every valid pixel went through predict
    else:
        assert calls == []


def test_near_ties_are_left_to_predict():
    """LogisticRegression's predict is the sign of the score, its probability expit(score): a score of 1e-20 gives
    class 1 but probabilities 0.5/0.5. Such near ties go to predict, clear cases never do."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    model = Pipeline([("model", LogisticRegression())]).fit(np.array([[-1.0], [1.0]]), np.array([0, 1]))
    lr = model.steps[-1][1]
    lr.coef_, lr.intercept_ = np.array([[1.0]]), np.array([0.0])
    two = (ClassInfo(0, "no", (0, 0, 0)), ClassInfo(1, "yes", (255, 255, 255)))
    fitted = FittedModel("classifier", "LogisticRegression", model, "predict", ("b1",), classes=two)
    calls = counted_predict(lr)
    x = np.array([[1e-20], [-1e-20], [0.0], [2.0], [-2.0]], np.float32)
    classes, p = fitted.pixel_function(probabilities=True)(x)
    assert classes.ravel().tolist() == [1, 0, 0, 1, 0] == lr.predict(x).tolist()
    assert calls == [3, 5] and p[0].tolist() == [0.5, 0.5]  # the 3 near ties, then the check above


def test_foreign_classifier_codes_from_probabilities(tmp_path):
    """A trusted foreign classifier with labels 10/20/30 (wrapped so that predict gives positions): probabilities
    give the same classes, and the wrapped predict is not called."""
    import joblib
    from sklearn.ensemble import RandomForestClassifier

    x = blobs()
    rng = np.random.default_rng(1)
    est = RandomForestClassifier(n_estimators=3, random_state=0).fit(x + rng.normal(0, 2, x.shape),
                                                                     np.array([30, 10, 20] * 200))
    joblib.dump(est, tmp_path / "foreign.joblib")
    loaded, _ = load_model(tmp_path / "foreign.joblib", trusted=True)
    expected = loaded.pixel_function()(x)
    calls = counted_predict(loaded.estimator.estimator)
    classes, p = loaded.pixel_function(probabilities=True)(x)
    np.testing.assert_array_equal(classes, expected)
    assert calls == [] and set(np.unique(classes)) == {10, 20, 30} and p.shape == (600, 3)


def test_nmf_on_standardised_bands_says_to_untick_standardisation():
    """NMF needs non-negative input; standardised bands are not: the message says which box to untick."""
    from deepraster.analysis.errors import EstimatorError
    from deepraster.analysis.estimators import make_estimator
    from deepraster.analysis.reduction import fit_reducer

    built = make_estimator("reduction", "NMF", "", seed=0, size=(2, ("n_components",)))
    sample = np.random.default_rng(0).random((100, 4)).astype(np.float32) * 100
    with pytest.raises(EstimatorError, match='Untick "Standardise bands"'):
        fit_reducer(sample, built, ("a", "b", "c", "d"), standardize=True)
    fitted = fit_reducer(sample, built, ("a", "b", "c", "d"), standardize=False)  # the advice works
    assert fitted.outputs == ("NMF 1", "NMF 2")
