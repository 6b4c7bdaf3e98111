"""Supervised classification and regression of pixels from reference samples, with honest validation.

``train_model`` checks the labels, cross-validates (or scores an independent test set) as planned in a
:class:`~models.validation.ValidationPlan`, and then refits the estimator on ALL training samples: that refitted
model is the one returned, applied to the raster and saved.

Class values written to the class raster: labels that are all integers in 0–65534 keep their own value (a field
``cid`` with 1 = water, 2 = vegetation gives a raster with 1 and 2); other labels (text) get 1, 2, ... in sorted
order. Class names are the labels as text.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..tiling.callbacks import Callbacks, check_cancel
from ..tiling.outputs import ClassInfo
from .errors import EstimatorError, TrainingDataError
from .estimators import BuiltEstimator
from .fitted import FittedModel
from .palette import category_colours
from .reduction import scaler_steps
from .validation import (
    ValidationPlan,
    ValidationReport,
    check_classes,
    classification_metrics,
    make_folds,
    regression_metrics,
)

TASKS = ("classification", "regression")


@dataclass
class TrainingSet:
    """Reference samples: features ``X`` (n, bands) float32, labels ``y`` (n,), group id per sample (polygon or group
    attribute) and map coordinates ``xy`` (n, 2) of the pixel centres in the raster's CRS."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    xy: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.X)
        if not (len(self.y) == len(self.groups) == len(self.xy) == n):
            raise ValueError("X, y, groups and xy must have one entry per sample")

    def __len__(self) -> int:
        return len(self.X)


def _integer_label(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return None


def encode_classes(labels: np.ndarray) -> tuple[np.ndarray, tuple[ClassInfo, ...]]:
    """Codes 0..K-1 per sample and the K classes (value, name, colour); see the module doc for the values."""
    labels = list(labels)
    if not labels:
        raise TrainingDataError("No labelled sample: the label field is empty for every reference feature.")
    ints = [_integer_label(v) for v in labels]
    if all(i is not None and 0 <= i <= 65534 for i in ints):
        uniq = sorted(set(ints))
        keys, values, names = ints, uniq, [str(v) for v in uniq]
    else:
        keys = [str(v) for v in labels]
        names = sorted(set(keys))
        uniq, values = names, list(range(1, len(names) + 1))
    code = {k: i for i, k in enumerate(uniq)}
    colours = category_colours(len(uniq))
    classes = tuple(ClassInfo(v, n, colours[i]) for i, (v, n) in enumerate(zip(values, names, strict=True)))
    return np.array([code[k] for k in keys], dtype=np.int64), classes


def codes_for(labels: np.ndarray, classes: tuple[ClassInfo, ...]) -> tuple[np.ndarray, list[str]]:
    """Codes of ``labels`` for known ``classes`` (−1 for unknown) and the names of the unknown labels."""
    by_name = {c.name: i for i, c in enumerate(classes)}
    names = [str(i) if (i := _integer_label(v)) is not None else str(v) for v in labels]
    codes = np.array([by_name.get(n, -1) for n in names], dtype=np.int64)
    return codes, sorted({n for n in names if n not in by_name})


def numeric_targets(labels: np.ndarray) -> np.ndarray:
    """Labels as float64 targets for regression; raises when one is not a number."""
    try:
        y = np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TrainingDataError("Regression needs a numeric label field; this one holds text. Choose a numeric "
                                "field, or classification.") from exc
    if not np.isfinite(y).all():
        raise TrainingDataError("Some labels are not finite numbers (NaN or infinite). Fix or remove them.")
    return y


def _fit(built: BuiltEstimator, standardize: bool, X: np.ndarray, y: np.ndarray):
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    pipeline = Pipeline([*scaler_steps(standardize), ("model", clone(built.estimator))])
    try:
        return pipeline.fit(X, y)
    except (ValueError, TypeError, ArithmeticError, np.linalg.LinAlgError) as exc:
        raise EstimatorError(f"{built.name} could not be fitted on {len(X)} samples: {exc}") from exc


def train_model(train: TrainingSet, task: str, built: BuiltEstimator, plan: ValidationPlan,
                band_names: tuple[str, ...], standardize: bool = True, test: TrainingSet | None = None,
                callbacks: Callbacks | None = None,
                params: dict[str, Any] | None = None) -> tuple[FittedModel, ValidationReport]:
    """Validate as ``plan`` says, then refit on all of ``train``; returns the refitted model and the report."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}")
    cb = callbacks or Callbacks()
    classify = task == "classification"
    notes: list[str] = []
    if classify:
        y, classes = encode_classes(train.y)
        names = [c.name for c in classes]
        notes += check_classes(y, names, plan, train.groups)
        samples: dict[str, Any] = {"per_class": {n: int(c) for n, c in zip(names, np.bincount(y, minlength=len(names)),
                                                                           strict=True)}}
    else:
        y, classes = numeric_targets(train.y), ()
        if len(y) < 2:
            raise TrainingDataError("Regression needs at least 2 samples.")
        samples = {"target_min": float(y.min()), "target_mean": float(y.mean()), "target_max": float(y.max())}
    samples = {"training_samples": len(train), "bands": int(train.X.shape[1]),
               "groups": int(len(np.unique(train.groups))), **samples}
    report = ValidationReport(task=task, estimator=built.name, params={"estimator_params": built.params,
                                                                          "standardize": standardize,
                                                                          **(params or {})},
                              validation=plan.describe(), samples=samples, warnings=notes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if plan.is_kfold:
            _cross_validate(train, y, task, built, plan, standardize, classes, report, cb)
        check_cancel(cb)
        final = _fit(built, standardize, train.X, y)
        if plan.scheme == "test_set":
            _score_test_set(final, test, task, classes, report)
    report.warnings += sorted({f"{w.category.__name__}: {w.message}" for w in caught
                               if issubclass(w.category, (UserWarning, RuntimeWarning))})[:5]
    report.final_model = f"The model kept (map and saved file) was refitted on all {len(train)} training samples."
    cb.progress(1.0)
    target = params.get("label_field", "target") if params else "target"
    fitted = FittedModel(kind="classifier" if classify else "regressor", name=built.name, estimator=final,
                         method="predict", band_names=tuple(band_names), classes=classes,
                         outputs=() if classify else (f"predicted {target}",),
                         params=report.params, notes={"validation": report.validation, **report.headline()})
    return fitted, report


def _cross_validate(train: TrainingSet, y: np.ndarray, task: str, built: BuiltEstimator, plan: ValidationPlan,
                    standardize: bool, classes: tuple[ClassInfo, ...], report: ValidationReport,
                    cb: Callbacks) -> None:
    folds = make_folds(plan, task, y, train.groups, train.xy)
    predicted = np.empty_like(y)
    for i, (tr, te) in enumerate(folds):
        check_cancel(cb)
        model = _fit(built, standardize, train.X[tr], y[tr])
        predicted[te] = model.predict(train.X[te])
        fold: dict[str, Any] = {"fold": i + 1, "train": int(len(tr)), "test": int(len(te)),
                                "test_groups": int(len(np.unique(train.groups[te])))}
        if task == "classification":
            fold["overall_accuracy"] = float(np.mean(predicted[te] == y[te]))
        else:
            m = regression_metrics(y[te], predicted[te]) if len(te) > 1 else {"rmse": float("nan")}
            fold["rmse"] = m["rmse"]
        report.folds.append(fold)
        cb.progress((i + 1) / (len(folds) + 1))
    report.metrics = (classification_metrics(y, predicted, [c.name for c in classes]) if task == "classification"
                      else regression_metrics(y, predicted))


def _score_test_set(final, test: TrainingSet | None, task: str, classes: tuple[ClassInfo, ...],
                    report: ValidationReport) -> None:
    if test is None or len(test) == 0:
        raise TrainingDataError("The independent test layer gave no sample inside the raster. Choose a test layer "
                                "that overlaps the raster, or another validation.")
    if task == "classification":
        y, unknown = codes_for(test.y, classes)
        if unknown:
            report.warnings.append(f"Test classes absent from the training data were left out: {', '.join(unknown)}.")
        keep = y >= 0
        if not keep.any():
            raise TrainingDataError("No test sample has a class of the training data. Check the label field of the "
                                    "test layer.")
        report.metrics = classification_metrics(y[keep], final.predict(test.X[keep]), [c.name for c in classes])
    else:
        y = numeric_targets(test.y)
        report.metrics = regression_metrics(y, final.predict(test.X))
    report.samples["test_samples"] = int(report.metrics["n"])
    report.samples["test_groups"] = int(len(np.unique(test.groups)))
