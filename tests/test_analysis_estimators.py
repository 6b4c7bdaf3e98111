"""scikit-learn estimators by name (analysis/estimators.py): registries, helpful errors, JSON keyword arguments
checked against each estimator, nothing injected that an estimator does not take (IAMAP's KNN bug)."""

from __future__ import annotations

import sys

import pytest
from deepraster.analysis.errors import EstimatorError
from deepraster.analysis.estimators import (
    REDUCTION,
    make_estimator,
    parse_kwargs,
    registry,
    resolve,
    umap_available,
    valid_names,
)
from deepraster.tiling.errors import DependencyError


def test_registries_by_kind():
    assert {"PCA", "FastICA", "NMF", "KernelPCA", "TruncatedSVD"} <= set(registry("decomposition"))
    assert {"TSNE", "Isomap", "MDS", "SpectralEmbedding"} <= set(registry("manifold"))
    assert set(registry("decomposition")) | set(registry("manifold")) == set(registry(REDUCTION))
    assert {"KMeans", "MiniBatchKMeans", "GaussianMixture", "Birch", "HDBSCAN", "DBSCAN"} <= set(registry("cluster"))
    assert {"RandomForestClassifier", "ExtraTreesClassifier", "HistGradientBoostingClassifier",
            "GradientBoostingClassifier", "KNeighborsClassifier", "SVC", "LogisticRegression",
            "NearestCentroid"} <= set(registry("classifier"))
    assert {"RandomForestRegressor", "SVR", "KNeighborsRegressor", "LinearRegression"} <= set(registry("regressor"))
    # not usable: needs estimators as arguments, or clusters bands instead of pixels
    assert "StackingClassifier" not in registry("classifier") and "SparseCoder" not in registry("decomposition")
    assert "FeatureAgglomeration" not in registry("cluster")
    assert any(n.startswith("UMAP") for n in valid_names(REDUCTION))


@pytest.mark.parametrize(("kind", "name", "canonical"), [
    ("classifier", "RandomForest", "RandomForestClassifier"), ("regressor", "random_forest", "RandomForestRegressor"),
    ("classifier", "svm", "SVC"), ("regressor", "SVM", "SVR"), ("classifier", "KNN", "KNeighborsClassifier"),
    ("cluster", "gmm", "GaussianMixture"), ("cluster", "k-means", "KMeans"), (REDUCTION, "t-SNE", "TSNE"),
    (REDUCTION, "pca", "PCA"), ("classifier", "hist_gradient_boosting", "HistGradientBoostingClassifier"),
])
def test_names_and_aliases(kind, name, canonical):
    assert resolve(kind, name)[0] == canonical


@pytest.mark.parametrize(("kind", "name", "message"), [
    ("classifier", "RandomForst", r"Unknown classifier 'RandomForst'\. Did you mean RandomForestClassifier\? "
                                  r"Choose one of these names .*KNeighborsClassifier.*SVC"),
    ("cluster", "kmens", r"Did you mean KMeans\?"),
    ("classifier", "KMeans", r"KMeans is a clustering method, not a classifier"),
    ("classifier", "StackingClassifier", r"cannot be used .* needs other estimators"),
    ("cluster", "FeatureAgglomeration", r"groups bands, not pixels"),
    (REDUCTION, "", r"No reduction method given"),
])
def test_unknown_names_are_explained(kind, name, message):
    with pytest.raises(EstimatorError, match=message):
        resolve(kind, name)


def test_rejected_kwargs_are_named():
    with pytest.raises(EstimatorError, match=r"RandomForestClassifier does not accept the keyword argument\(s\) "
                                             r"n_estimator \(did you mean n_estimators\?\), colour\. Its parameters"):
        make_estimator("classifier", "RandomForest", '{"n_estimator": 10, "colour": "red"}')


def test_invalid_values_are_explained():
    with pytest.raises(EstimatorError, match=r"'n_estimators' parameter of RandomForestClassifier must be an int"):
        make_estimator("classifier", "RandomForest", '{"n_estimators": "many"}')


@pytest.mark.parametrize(("text", "message"), [
    ("{n_estimators: 3}", r"not valid JSON \(Expecting property name enclosed in double quotes at character 2\)"),
    ("[1, 2]", r"must be a JSON object"),
    ("{'a': 1}", r"not valid JSON"),
])
def test_bad_json(text, message):
    with pytest.raises(EstimatorError, match=message):
        parse_kwargs(text)


def test_json_values():
    assert parse_kwargs("") == {} and parse_kwargs(None) == {}
    assert parse_kwargs('{"max_depth": null, "bootstrap": false, "a": [1, 2]}') == {
        "max_depth": None, "bootstrap": False, "a": [1, 2]}


def test_seed_only_where_accepted():
    """IAMAP injected random_state everywhere, which made KNeighborsClassifier and NearestCentroid fail."""
    for kind, name in (("classifier", "KNN"), ("classifier", "NearestCentroid"), ("regressor", "KNN"),
                       ("cluster", "DBSCAN"), ("cluster", "HDBSCAN")):
        built = make_estimator(kind, name, None, seed=3)
        assert "random_state" not in built.params
    built = make_estimator("classifier", "RandomForest", '{"n_estimators": 7}', seed=3)
    assert built.estimator.get_params()["random_state"] == 3 and built.estimator.n_estimators == 7
    built = make_estimator("classifier", "RandomForest", '{"random_state": 11}', seed=3)
    assert built.estimator.random_state == 11  # the user's value wins


def test_size_goes_to_the_right_parameter():
    size = (6, ("n_clusters", "n_components"))
    assert make_estimator("cluster", "KMeans", None, size=size).estimator.n_clusters == 6
    gmm = make_estimator("cluster", "GaussianMixture", None, size=size)
    assert gmm.estimator.n_components == 6 and gmm.size_param == "n_components"
    assert make_estimator("cluster", "HDBSCAN", None, size=size).size_param is None
    assert make_estimator("cluster", "KMeans", '{"n_clusters": 4}', size=size).estimator.n_clusters == 4
    assert make_estimator(REDUCTION, "TSNE", None, size=(3, ("n_components",))).estimator.n_components == 3


def test_umap_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    assert not umap_available() and "UMAP (needs umap-learn)" in valid_names(REDUCTION)
    with pytest.raises(DependencyError, match=r'umap-learn.*python -m pip install umap-learn "numpy<2"'):
        make_estimator(REDUCTION, "UMAP")


def test_umap_uses_its_approximate_neighbour_search_unless_told():
    """umap-learn is a pinned requirement. Its approximate index maps whole rasters fast whatever the sample size."""
    assert umap_available() and "UMAP" in valid_names(REDUCTION)
    built = make_estimator(REDUCTION, "umap", '{"n_neighbors": 10}', seed=3, size=(2, ("n_components",)))
    assert type(built.estimator).__name__ == "UMAP" and built.name == "UMAP"
    assert built.params == {"n_components": 2, "random_state": 3, "force_approximation_algorithm": True,
                            "n_neighbors": 10}
    exact = make_estimator(REDUCTION, "UMAP", '{"force_approximation_algorithm": false}')
    assert exact.estimator.force_approximation_algorithm is False
    with pytest.raises(EstimatorError, match="UMAP does not accept the keyword argument.*n_neighbours.*n_neighbors"):
        make_estimator(REDUCTION, "UMAP", '{"n_neighbours": 10}')


def test_registries_do_not_import_torch():
    """sklearn.utils.all_estimators imports PyTorch (array-API glue): 3 s and 500 MB inside QGIS. Not used."""
    import subprocess
    import sys

    from helpers import REPO

    code = ("import sys; from deepraster.analysis.estimators import valid_names; "
            "[valid_names(k) for k in ('reduction', 'cluster', 'classifier', 'regressor')]; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": str(REPO / ".build" / "plugins"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
