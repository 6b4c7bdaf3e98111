"""Honest validation (analysis/validation.py, analysis/supervised.py): group and spatial-block folds never put one
group on both sides, every sample is tested once, bad training data is explained, metrics agree with definitions,
the report is escaped, and the model kept is refitted on all samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
from deepraster.analysis.errors import TrainingDataError
from deepraster.analysis.estimators import make_estimator
from deepraster.analysis.supervised import TrainingSet, codes_for, encode_classes, train_model
from deepraster.analysis.validation import (
    ValidationPlan,
    ValidationReport,
    check_classes,
    classification_metrics,
    make_folds,
    regression_metrics,
    report_html,
    spatial_block_ids,
)


def clustered(n_groups: int = 30, per_group: int = 20, classes: int = 3, seed: int = 0) -> TrainingSet:
    """Groups of pixels around group centres (like pixels of polygons); a group's pixels share class and look."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 10000, (n_groups, 2))
    group_class = np.arange(n_groups) % classes
    look = rng.normal(0, 1, (n_groups, 4)) + group_class[:, None] * 0.8
    g = np.repeat(np.arange(n_groups), per_group)
    X = (look[g] + rng.normal(0, 0.05, (len(g), 4))).astype(np.float32)
    xy = centres[g] + rng.normal(0, 30, (len(g), 2))
    labels = np.array([["water", "forest", "farm"][c] for c in group_class[g]], dtype=object)
    return TrainingSet(X, labels, g.astype(np.int64), xy)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("scheme", ["group", "spatial"])
def test_no_group_on_both_sides(seed, task, scheme):
    data = clustered(seed=seed)
    y = encode_classes(data.y)[0] if task == "classification" else data.X[:, 0].astype(np.float64)
    plan = ValidationPlan(scheme, folds=4, block_size=1500.0, seed=seed)
    folds = make_folds(plan, task, y, data.groups, data.xy)
    groups = data.groups if scheme == "group" else spatial_block_ids(data.xy, 1500.0)
    tested = np.zeros(len(y), int)
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        tested[test] += 1
    assert (tested == 1).all()


def test_random_folds_split_groups_and_stratify():
    data = clustered()
    y, _ = encode_classes(data.y)
    folds = make_folds(ValidationPlan("random", 5, seed=0), "classification", y, data.groups, data.xy)
    assert any(set(data.groups[tr]) & set(data.groups[te]) for tr, te in folds)  # the leak group folds prevent
    for _, te in folds:
        assert np.abs(np.bincount(y[te], minlength=3) / len(te) - np.bincount(y) / len(y)).max() < 0.02


def test_spatial_blocks():
    xy = np.array([[0.0, 0.0], [999.0, 999.0], [1000.0, 0.0], [-1.0, 5.0], [1500.0, 1999.0]])
    ids = spatial_block_ids(xy, 1000.0)
    assert ids[0] == ids[1] and len({ids[0], ids[2], ids[3], ids[4]}) == 4
    with pytest.raises(TrainingDataError, match="positive distance"):
        spatial_block_ids(xy, 0.0)


@pytest.mark.parametrize(("plan", "n", "message"), [
    (ValidationPlan("random", 5), 4, r"4 samples are too few for 5 folds"),
    (ValidationPlan("group", 5), 40, r"only 2 groups .*too few for 5 folds: lower the number of folds to at most 2"),
    (ValidationPlan("spatial", 3, block_size=1e9), 40, r"only 1 spatial blocks of 1e\+09 map units.*smaller blocks"),
])
def test_too_few_samples_or_groups(plan, n, message):
    y = np.arange(n) % 2
    groups = (np.arange(n) >= n // 2).astype(int)
    xy = np.random.default_rng(0).uniform(0, 100, (n, 2))
    with pytest.raises(TrainingDataError, match=message):
        make_folds(plan, "classification", y, groups, xy)


def test_class_checks():
    plan = ValidationPlan("group", 3)
    with pytest.raises(TrainingDataError, match=r"Class\(es\) rare have a single sample"):
        check_classes(np.array([0, 0, 1, 1, 2]), ["a", "b", "rare"], plan)
    with pytest.raises(TrainingDataError, match=r"single class \(a\)"):
        check_classes(np.array([0, 0, 0]), ["a"], plan)
    warnings = check_classes(np.array([0, 0, 1, 1]), ["a", "b"], plan, groups=np.array([1, 2, 3, 3]))
    assert "b occur in a single polygon/group" in warnings[0]


def test_label_encoding():
    codes, classes = encode_classes(np.array([2, 1, 2, 7], dtype=object))
    assert [(c.value, c.name) for c in classes] == [(1, "1"), (2, "2"), (7, "7")] and codes.tolist() == [1, 0, 1, 2]
    codes, classes = encode_classes(np.array(["water", "farm", "water"], dtype=object))
    assert [(c.value, c.name) for c in classes] == [(1, "farm"), (2, "water")] and codes.tolist() == [1, 0, 1]
    codes, unknown = codes_for(np.array(["farm", "moon"], dtype=object), classes)
    assert codes.tolist() == [0, -1] and unknown == ["moon"]
    assert codes_for(np.array([1.0, 7], dtype=object), encode_classes(np.array([1, 7], dtype=object))[1])[0].tolist() \
        == [0, 1]


def test_metrics_match_definitions():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 2, 0, 2])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["overall_accuracy"] == pytest.approx(6 / 8)
    assert m["confusion_matrix"]["matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 2]]  # rows: reference
    po, pe = 6 / 8, (3 * 3 + 2 * 3 + 3 * 2) / 64
    assert m["kappa"] == pytest.approx((po - pe) / (1 - pe))
    b = m["per_class"][1]
    assert (b["precision"], b["recall"], b["support"]) == (pytest.approx(2 / 3), 1.0, 2)
    f1 = [2 * p * r / (p + r) for p, r in ((2 / 3, 2 / 3), (2 / 3, 1.0), (1.0, 2 / 3))]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    r = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert r["rmse"] == pytest.approx(np.sqrt(4 / 3)) and r["mae"] == pytest.approx(2 / 3)
    assert r["r2"] == pytest.approx(1 - 4 / 2)


def test_report_is_escaped_and_self_contained(tmp_path):
    m = classification_metrics(np.array([0, 1]), np.array([0, 1]), ["<script>alert(1)</script>", "a&b"])
    report = ValidationReport("classification", "RF", {"k": "<b>"}, "5-fold group k-fold", {"n": 2}, m,
                              warnings=["<i>careful</i>"])
    text = report_html(report)
    assert "<script>" not in text and "&lt;script&gt;" in text and "a&amp;b" in text and "<i>" not in text
    assert "http" not in text and "<link" not in text
    report.write_json(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["confusion_matrix"]["labels"][1] == "a&b"


def test_train_refits_on_all_samples():
    """The returned model is the estimator fitted on all samples (not a fold's): same predictions as fitting it
    directly; the report holds pooled out-of-fold metrics and one line per fold."""
    data = clustered()
    built = make_estimator("classifier", "RandomForest", '{"n_estimators": 15}', seed=0)
    fitted, report = train_model(data, "classification", built, ValidationPlan("group", 5, seed=0),
                                 ("b1", "b2", "b3", "b4"), standardize=False)
    from sklearn.ensemble import RandomForestClassifier

    codes, classes = encode_classes(data.y)
    direct = RandomForestClassifier(n_estimators=15, random_state=0).fit(data.X, codes)
    np.testing.assert_array_equal(fitted.estimator.predict(data.X), direct.predict(data.X))
    assert report.metrics["n"] == len(data) and len(report.folds) == 5
    assert sum(f["test"] for f in report.folds) == len(data)
    assert [c.name for c in fitted.classes] == ["farm", "forest", "water"]
    assert "refitted on all 600 training samples" in report.final_model


def test_group_folds_are_less_optimistic_than_random():
    """Pixels of one group are near-copies: random folds reward memorising groups, group folds do not."""
    data = clustered(n_groups=40, per_group=25, seed=4)
    built = make_estimator("classifier", "KNN", '{"n_neighbors": 1}')
    scores = {}
    for scheme in ("random", "group"):
        _, report = train_model(data, "classification", built, ValidationPlan(scheme, 5, seed=0), ("a",) * 4)
        scores[scheme] = report.metrics["overall_accuracy"]
    assert scores["random"] > 0.95 and scores["group"] < scores["random"] - 0.15


def test_independent_test_set_and_regression():
    data, other = clustered(seed=1), clustered(seed=2)
    built = make_estimator("regressor", "RandomForest", '{"n_estimators": 10}', seed=0)
    reg = TrainingSet(data.X, data.X[:, 0] * 3.0 + 1.0, data.groups, data.xy)
    test = TrainingSet(other.X, other.X[:, 0] * 3.0 + 1.0, other.groups, other.xy)
    fitted, report = train_model(reg, "regression", built, ValidationPlan("test_set"), ("a",) * 4, test=test)
    assert report.metrics["r2"] > 0.8 and report.samples["test_samples"] == len(other)
    assert fitted.kind == "regressor" and fitted.outputs == ("predicted target",)
    with pytest.raises(TrainingDataError, match="numeric label field"):
        train_model(data, "regression", built, ValidationPlan("random"), ("a",) * 4)


def test_test_set_with_unknown_class_is_reported():
    data, other = clustered(seed=1), clustered(seed=2)
    other.y[:5] = "moon"
    built = make_estimator("classifier", "KNN")
    _, report = train_model(data, "classification", built, ValidationPlan("test_set"), ("a",) * 4, test=other)
    assert report.metrics["n"] == len(other) - 5
    assert any("moon" in w for w in report.warnings)
