"""Honest validation of supervised models: fold schemes, metrics, and a report written as JSON and HTML.

Schemes (``ValidationPlan.scheme``):

* ``random``: k folds of individual samples (stratified by class for classification). Pixels of one polygon fall on
  both sides, so neighbouring, near-identical pixels are trained on and tested: accuracy is overstated.
* ``group``: k folds of whole groups (a polygon, or the value of a group attribute): all pixels of a group are in
  the same fold, so no group is ever on both sides. Stratified by class as far as the groups allow.
* ``spatial``: groups are square blocks of ``block_size`` map units (``floor(x / size), floor(y / size)`` of the
  pixel centre), so training and test pixels are at least partly far apart.
* ``test_set``: an independent test layer; the model trained on all training samples is scored on it.
* ``none``: no validation (the report says the accuracy is unknown).

Metrics are pooled over the out-of-fold predictions: every sample is predicted once, by the model of the fold that
did not train on it. The model that is kept is always refitted on all samples (never the "best fold").
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..tiling.transaction import write_together
from .errors import TrainingDataError
from .metrics import class_scores, confusion_matrix

SCHEMES = ("random", "group", "spatial", "test_set", "none")
SCHEME_TITLES = {
    "random": "random k-fold",
    "group": "group k-fold (no group on both sides)",
    "spatial": "spatial block k-fold",
    "test_set": "independent test layer",
    "none": "no validation",
}


@dataclass(frozen=True)
class ValidationPlan:
    """How to validate: scheme (see the module doc), number of folds, spatial block size in map units, seed."""

    scheme: str = "random"
    folds: int = 5
    block_size: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown validation scheme {self.scheme!r}; one of {', '.join(SCHEMES)}")

    @property
    def is_kfold(self) -> bool:
        return self.scheme in ("random", "group", "spatial")

    def describe(self) -> str:
        text = SCHEME_TITLES[self.scheme]
        if self.is_kfold:
            text = f"{self.folds}-fold {text}"
        if self.scheme == "spatial":
            text += f", blocks of {self.block_size:g} map units"
        return text


def spatial_block_ids(xy: np.ndarray, block_size: float) -> np.ndarray:
    """Group id per sample: the square block of ``block_size`` map units holding its coordinates ``(n, 2)``."""
    if not block_size or block_size <= 0:
        raise TrainingDataError("The spatial block size must be a positive distance in map units (e.g. 1000).")
    cells = np.floor(np.asarray(xy, np.float64) / float(block_size)).astype(np.int64)
    _, ids = np.unique(cells, axis=0, return_inverse=True)
    return ids.ravel()


def check_classes(codes: np.ndarray, names: list[str], plan: ValidationPlan,
                  groups: np.ndarray | None = None) -> list[str]:
    """Raise when classification cannot work (fewer than 2 classes, a class with a single sample); return warnings
    (a class found in a single group cannot be both trained on and tested under group or spatial folds)."""
    counts = np.bincount(codes, minlength=len(names))
    if (counts > 0).sum() < 2:
        raise TrainingDataError(
            f"The training data hold a single class ({names[int(np.argmax(counts))]}): classification needs at least "
            "two. Check the label field, or choose regression for a numeric target."
        )
    single = [names[i] for i in np.flatnonzero(counts == 1)]
    if single:
        raise TrainingDataError(
            f"Class(es) {', '.join(single)} have a single sample: a class needs at least two, to be trained on and "
            "tested. Add reference data for them, or remove them from the layer."
        )
    warnings = []
    if plan.is_kfold and plan.scheme == "random" and counts[counts > 0].min() < plan.folds:
        few = [f"{names[i]} ({counts[i]})" for i in np.flatnonzero((counts > 0) & (counts < plan.folds))]
        warnings.append(f"Class(es) with fewer samples than folds: {', '.join(few)}; some folds test none of them.")
    if groups is not None and plan.scheme in ("group", "spatial"):
        lonely = [names[c] for c in np.flatnonzero(counts) if len(np.unique(groups[codes == c])) < 2]
        if lonely:
            unit = "polygon/group" if plan.scheme == "group" else "spatial block"
            warnings.append(f"Class(es) {', '.join(lonely)} occur in a single {unit}: under this validation they are "
                            "only tested by models that never saw them, so their recall is 0.")
    return warnings


def fewer_folds(limit: int, fix: str) -> str:
    """Advice that can be followed when at most ``limit`` folds are possible: fewer folds only when that is at
    least the 2 that cross-validation needs; otherwise what really helps (``fix``), or another validation."""
    if limit >= 2:
        return f"lower the number of folds to at most {limit}, or {fix}."
    return (f"cross-validation needs at least 2, and no number of folds works here: {fix}, or choose "
            f"'{SCHEME_TITLES['test_set']}' or '{SCHEME_TITLES['none']}' as the validation.")


def make_folds(plan: ValidationPlan, task: str, y: np.ndarray, groups: np.ndarray | None = None,
               xy: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, test indices) per fold; every sample is in exactly one test fold.

    Args:
        task: "classification" (stratified folds) or "regression".
        y: class codes or numeric targets, one per sample.
        groups: group id per sample (scheme "group").
        xy: map coordinates ``(n, 2)`` of the samples (scheme "spatial").
    """
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    if not plan.is_kfold:
        raise ValueError(f"scheme {plan.scheme!r} has no folds")
    k, n = int(plan.folds), len(y)
    if k < 2:
        raise TrainingDataError(f"Cross-validation needs at least 2 folds (got {k}).")
    if n < k:
        raise TrainingDataError(f"{n} samples are too few for {k} folds: "
                                + fewer_folds(n, "add reference points or polygons over valid pixels"))
    classify = task == "classification"
    if plan.scheme == "random":
        if classify:
            largest = int(np.bincount(y.astype(np.int64)).max())
            if largest < k:
                raise TrainingDataError(f"No class has {k} samples, so {k} stratified folds are impossible: "
                                        + fewer_folds(largest, "add reference data (several samples per class), "
                                                      "or use fewer classes"))
            splitter = StratifiedKFold(k, shuffle=True, random_state=plan.seed)
        else:
            splitter = KFold(k, shuffle=True, random_state=plan.seed)
        g = None
    else:
        if plan.scheme == "spatial":
            if xy is None:
                raise ValueError("spatial folds need the sample coordinates")
            g = spatial_block_ids(xy, plan.block_size or 0.0)
            unit = f"spatial blocks of {plan.block_size:g} map units"
            fix = "choose smaller blocks"
        else:
            if groups is None:
                raise ValueError("group folds need a group per sample")
            g = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
            unit = "groups (polygons, or values of the group field)"
            fix = "add reference polygons"
        n_groups = int(g.max()) + 1
        if n_groups < k:
            raise TrainingDataError(f"The samples fall in only {n_groups} {unit}, too few for {k} folds: "
                                    + fewer_folds(n_groups, fix))
        splitter = (StratifiedGroupKFold(k, shuffle=True, random_state=plan.seed) if classify
                    else GroupKFold(k, shuffle=True, random_state=plan.seed))
    folds = [(np.asarray(tr), np.asarray(te)) for tr, te in splitter.split(np.zeros((n, 1)), y, g)]
    empty = [i + 1 for i, (tr, te) in enumerate(folds) if len(tr) == 0 or len(te) == 0]
    if empty:
        raise TrainingDataError(f"Fold(s) {empty} would be empty: lower the number of folds.")
    return folds


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Overall accuracy, Cohen's kappa, macro F1 (over classes present in ``y_true``), per-class precision, recall,
    F1 and support, and the confusion matrix (rows: reference, columns: predicted), for codes 0..len(names)-1
    (computed by :mod:`analysis.metrics`)."""
    labels = list(range(len(names)))
    scores = class_scores(confusion_matrix(y_true, y_pred, labels), labels, names)
    return {
        "overall_accuracy": scores["overall_accuracy"],
        "kappa": scores["kappa"] if scores["kappa"] is not None else 0.0,
        "macro_f1": scores["macro_f1"],
        "per_class": [{k: c[k] for k in ("class", "precision", "recall", "f1", "support")}
                      for c in scores["per_class"]],
        "confusion_matrix": {k: scores["confusion_matrix"][k] for k in ("labels", "rows", "columns", "matrix")},
        "n": int(len(y_true)),
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """R², RMSE and MAE (in the target's units)."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {"r2": float(r2_score(y_true, y_pred)), "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
            "mae": float(mean_absolute_error(y_true, y_pred)), "n": int(len(y_true))}


HEADLINE = {"classification": ("overall_accuracy", "kappa", "macro_f1"), "regression": ("r2", "rmse", "mae")}


@dataclass
class ValidationReport:
    """What was trained, how it was validated and how well it did; written as JSON and self-contained HTML."""

    task: str
    estimator: str
    params: dict[str, Any]
    validation: str
    samples: dict[str, Any]
    metrics: dict[str, Any] | None = None
    folds: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    final_model: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def headline(self) -> dict[str, float]:
        """The main metrics (accuracy, kappa, macro F1; or R², RMSE, MAE); empty without validation."""
        if not self.metrics:
            return {}
        return {k: self.metrics[k] for k in HEADLINE[self.task]}

    def summary(self) -> str:
        """One line for the log."""
        if not self.metrics:
            return f"{self.estimator}: no validation, accuracy unknown."
        values = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in self.headline().items())
        return f"{self.estimator}, {self.validation}: {values} (n = {self.metrics['n']})."

    def write_json(self, path: str | Path) -> Path:
        return self.write(json_path=path)[0]

    def write_html(self, path: str | Path) -> Path:
        return self.write(html_path=path)[0]

    def write(self, html_path: str | Path | None = None, json_path: str | Path | None = None) -> list[Path]:
        """Write the HTML and/or JSON report together (both or neither: temporary names renamed at the end)."""
        contents: dict[str | Path, str] = {}
        if html_path:
            contents[html_path] = report_html(self)
        if json_path:
            contents[json_path] = json.dumps(self.to_dict(), indent=2, default=str) + "\n"
        return write_together(contents)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def report_html(report: ValidationReport) -> str:
    """A self-contained HTML page (no scripts, no external files); every value is escaped."""
    e = html.escape
    parts = [f"<h1>{e(report.estimator)}: {e(report.task)}</h1>", f"<p>Validation: {e(report.validation)}. "
             f"{e(report.final_model)}</p>"]
    for w in report.warnings:
        parts.append(f'<p class="warn">{e(w)}</p>')
    m = report.metrics
    if m:
        parts.append("<h2>Accuracy</h2>")
        parts.append(_table(["metric", "value"], [[k.replace("_", " "), v] for k, v in report.headline().items()]
                            + [["samples scored", m["n"]]]))
        if report.task == "classification":
            parts.append("<h2>Per class</h2>")
            parts.append(_table(["class", "precision", "recall", "F1", "support"],
                                [[c["class"], c["precision"], c["recall"], c["f1"], c["support"]]
                                 for c in m["per_class"]]))
            cm = m["confusion_matrix"]
            parts.append("<h2>Confusion matrix (rows: reference, columns: predicted)</h2>")
            parts.append(_table(["", *cm["labels"]], [[name, *row] for name, row in zip(cm["labels"], cm["matrix"],
                                                                                         strict=True)]))
    else:
        parts.append("<p>No validation was run: the accuracy of this model is unknown.</p>")
    if report.folds:
        keys = [k for k in report.folds[0] if k != "fold"]
        parts.append("<h2>Folds</h2>")
        parts.append(_table(["fold", *keys], [[f["fold"], *(f[k] for k in keys)] for f in report.folds]))
    parts.append("<h2>Samples</h2>")
    parts.append(_table(["", "value"], [[k, json.dumps(v) if isinstance(v, (dict, list)) else v]
                                        for k, v in report.samples.items()]))
    parts.append("<h2>Parameters</h2>")
    parts.append(_table(["", "value"], [[k, json.dumps(v, default=str)] for k, v in report.params.items()]))
    style = ("body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}th{background:#eee}"
             "td:first-child{text-align:left}.warn{color:#a40}")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{e(report.estimator)} report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
