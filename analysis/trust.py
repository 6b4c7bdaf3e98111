"""Saving fitted models and loading them back only when they can be trusted.

A model is saved as ``<name>.joblib`` (the scikit-learn object, a pickle) beside ``<name>.joblib.json``, a sidecar
describing what the model expects and gives (kind, band names, classes, outputs, parameters, versions) and signed:
``hmac_sha256`` is an HMAC-SHA256, keyed by a random secret of this user, of the model file's SHA-256 and the
sidecar's other content.

Unpickling runs code stored in the file, so :func:`load_model` refuses a file whose signature does not verify (not
written by this plugin for this user, or modified since) unless the caller says the user trusts it. The secret lives
in ``secret.key`` (mode 0600) in the configuration folder: ``$DEEPRASTER_CONFIG_DIR`` if set (tests use it), else
``%APPDATA%/deepraster`` on Windows, else ``$XDG_CONFIG_HOME/deepraster`` or ``~/.config/deepraster``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..tiling.checksums import sha256_of
from ..tiling.outputs import ClassInfo
from ..tiling.transaction import Move, stage
from ..tiling.writer import check_writable
from .errors import ModelFileError
from .fitted import FittedModel
from .palette import category_colours

ENV_CONFIG = "DEEPRASTER_CONFIG_DIR"
FORMAT = "deepraster-sklearn-model"
FORMAT_VERSION = 1
PICKLE_WARNING = (
    "Model files are Python pickles: loading one runs any code it contains. Tick \"Trust this model file\" only if "
    "you know where the file comes from."
)


def config_dir() -> Path:
    """The folder holding this user's Deep Raster secret (see the module doc)."""
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    if sys.platform == "win32" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "deepraster"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "deepraster"


def secret_key() -> bytes:
    """This user's 32-byte signing secret, created on first use (readable by the user only)."""
    folder = config_dir()
    path = folder / "secret.key"
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # created meanwhile by another run
        return _read_key(path)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) < 32:
        raise ModelFileError(f"The signing secret {path} is damaged (too short). Delete it: a new one is made, and "
                             "models saved before must then be loaded as trusted files.")
    return key


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """``model.joblib`` → ``model.joblib.json``."""
    return Path(f"{path}.json")


def _signature(meta: dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in meta.items() if k != "hmac_sha256"}, sort_keys=True, default=str)
    return hmac.new(secret_key(), body.encode("utf-8"), hashlib.sha256).hexdigest()


def describe(fitted: FittedModel) -> dict[str, Any]:
    """The sidecar content (without file digest and signature): what the model expects and gives."""
    import sklearn

    def cls(c: ClassInfo) -> dict[str, Any]:
        return {"value": c.value, "name": c.name, "rgb": list(c.rgb)}

    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": fitted.kind, "name": fitted.name,
        "method": fitted.method, "band_names": list(fitted.band_names), "n_features": fitted.n_features,
        "outputs": list(fitted.outputs), "classes": [cls(c) for c in fitted.classes],
        "noise": cls(fitted.noise) if fitted.noise else None, "params": fitted.params, "notes": fitted.notes,
        "sklearn_version": sklearn.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def save_model(fitted: FittedModel, path: str | os.PathLike[str]) -> Path:
    """Write the model and its signed sidecar (temporary names, renamed at the end); returns the model path."""
    import joblib

    target = check_writable(path)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    side_temp = Path(f"{temp}.json")
    try:
        joblib.dump(fitted.estimator, temp, compress=3)
        meta = {**describe(fitted), "file": target.name, "sha256": sha256_of(temp)}
        meta["hmac_sha256"] = _signature(meta)
        side_temp.write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
        # model and sidecar renamed together (with the run's other outputs, at the end of a Processing run)
        stage([Move(temp, target), Move(side_temp, sidecar_path(target))])
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        side_temp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ModelFileError(f"Cannot write the model {target}: {exc.strerror or exc}. Choose a folder you "
                                 f"can write to.") from exc
        raise
    return target


def verify(path: str | os.PathLike[str]) -> tuple[bool, str]:
    """Whether the file's sidecar signature verifies, and why not."""
    path = Path(path)
    side = sidecar_path(path)
    if not side.is_file():
        return False, f"it has no sidecar {side.name}, so it was not saved by Deep Raster"
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return False, f"its sidecar {side.name} cannot be read ({exc})"
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return False, f"{side.name} is not a Deep Raster model description"
    if meta.get("sha256") != sha256_of(path):
        return False, "the file was changed after it was saved"
    if not hmac.compare_digest(str(meta.get("hmac_sha256", "")), _signature(meta)):
        return False, "its signature does not match: it was saved by another user or installation, or edited"
    return True, ""


def load_model(path: str | os.PathLike[str], trusted: bool = False) -> tuple[FittedModel, list[str]]:
    """The saved model and warnings; refuses unsigned or altered files unless ``trusted`` (see the module doc)."""
    import joblib

    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file. Choose the .joblib file saved by \"Reduce "
                             "dimensions\", \"Cluster pixels\" or \"Train a classifier or regressor\".")
    if not path.is_file():
        raise ModelFileError(f"No model file at {path}. Choose a .joblib file saved by a Deep Raster algorithm.")
    ok, reason = verify(path)
    warnings: list[str] = []
    if not ok:
        if not trusted:
            raise ModelFileError(f"The model file {path.name} is not trusted: {reason}. {PICKLE_WARNING}")
        warnings.append(f"Loading {path.name} although {reason}, because it is marked as trusted.")
    try:
        estimator = joblib.load(path)
    except Exception as exc:  # noqa: BLE001 (unpickling raises anything; every case means an unusable file)
        raise ModelFileError(
            f"{path.name} is not a saved model of this plugin, or it is damaged: it cannot be read as a joblib file "
            f"({type(exc).__name__}: {str(exc)[:200]}). Choose the .joblib file saved by \"Reduce dimensions\", "
            "\"Cluster pixels\" or \"Train a classifier or regressor\", or save the model again."
        ) from exc
    side = sidecar_path(path)
    meta = _read_meta(side) if side.is_file() else None
    if meta is None:
        warnings.append("No model description: kind, bands and classes were guessed from the estimator.")
        return infer_model(estimator, path.name), warnings
    import sklearn

    if meta.get("sklearn_version") != sklearn.__version__:
        warnings.append(f"The model was saved with scikit-learn {meta.get('sklearn_version')}; this is "
                        f"{sklearn.__version__}. Results may differ; refit it if they look wrong.")
    return from_meta(estimator, meta), warnings


def _read_meta(side: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def from_meta(estimator: Any, meta: dict[str, Any]) -> FittedModel:
    """Rebuild a :class:`FittedModel` from a loaded estimator and its sidecar."""
    def cls(d: dict[str, Any]) -> ClassInfo:
        return ClassInfo(int(d["value"]), str(d["name"]), tuple(int(v) for v in d["rgb"]))

    try:
        return FittedModel(kind=meta["kind"], name=meta["name"], estimator=estimator, method=meta["method"],
                           band_names=tuple(meta["band_names"]), outputs=tuple(meta.get("outputs", ())),
                           classes=tuple(cls(c) for c in meta.get("classes", ())),
                           noise=cls(meta["noise"]) if meta.get("noise") else None,
                           params=meta.get("params", {}), notes=meta.get("notes", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"The model description is incomplete ({exc}). Save the model again.") from exc


def infer_model(estimator: Any, name: str) -> FittedModel:
    """A :class:`FittedModel` for a trusted estimator saved elsewhere (no sidecar): kind from its methods."""
    n = getattr(estimator, "n_features_in_", None)
    if n is None:
        raise ModelFileError(f"{name} is not a fitted scikit-learn estimator (it has no n_features_in_).")
    bands = tuple(f"feature {i + 1}" for i in range(int(n)))
    label = type(estimator).__name__
    if hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_"):
        labels = list(estimator.classes_)
        ints = all(isinstance(v, int) or (hasattr(v, "is_integer") and float(v).is_integer()) for v in labels)
        values = [int(v) for v in labels] if ints and min(labels) >= 0 else list(range(1, len(labels) + 1))
        colours = category_colours(len(labels))
        classes = tuple(ClassInfo(v, str(lbl), colours[i]) for i, (v, lbl) in enumerate(zip(values, labels,
                                                                                            strict=True)))
        # predictions are labels, not codes: map them through a lookup of codes
        return FittedModel("classifier", label, _CodePredictor(estimator), "predict", bands, classes=classes)
    if hasattr(estimator, "predict") and not hasattr(estimator, "transform"):
        return FittedModel("regressor", label, estimator, "predict", bands, outputs=("prediction",))
    if hasattr(estimator, "transform"):
        k = int(estimator.transform(np.zeros((1, int(n)))).shape[1])
        return FittedModel("reduction", label, estimator, "transform", bands,
                           outputs=tuple(f"{label} {i + 1}" for i in range(k)))
    raise ModelFileError(f"{name}: cannot tell how to apply a {label} (no predict or transform).")


class _CodePredictor:
    """Wraps a classifier whose ``predict`` returns labels so that it returns codes (index in ``classes_``)."""

    predicts_positions = True  # read by models.fitted.argmax_rule

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def predict(self, X):
        labels = self.estimator.predict(X)
        return np.searchsorted(self.estimator.classes_, labels)

    def predict_proba(self, X):
        return self.estimator.predict_proba(X)


def check_compatible(fitted: FittedModel, band_names: tuple[str, ...]) -> list[str]:
    """Raise when the chosen bands cannot feed the model; warn when their names differ from the training bands."""
    if len(band_names) != fitted.n_features:
        raise ModelFileError(
            f"The model expects {fitted.n_features} bands ({', '.join(fitted.band_names)}) but {len(band_names)} "
            f"were chosen. Choose the bands it was trained on, in the same order."
        )
    named = [(a, b) for a, b in zip(fitted.band_names, band_names, strict=True) if a and b and a != b]
    if named and not all(a.startswith("feature ") for a, _ in named):
        pairs = ", ".join(f"{b} for {a}" for a, b in named[:5])
        return [f"Band names differ from the training bands ({pairs}); check that the bands are in the same order."]
    return []
