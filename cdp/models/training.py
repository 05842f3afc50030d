"""Training data with a time split, fitting, and the held-out evaluation.

The cut-off is one target horizon before now: features come from the events before it, labels
from the window [cut-off, now), which has fully happened. The population is the live profiles
that had an event before the cut-off (within the features' lookback): they existed then, as the
profiles scored later exist when they are scored. A quarter of them (stratified by class for
classifiers) is held out; the stored model is the one evaluated on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sklearn.metrics import (
    brier_score_loss,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
    silhouette_score,
)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sqlalchemy import Connection

from cdp.errors import UserError
from cdp.models.features import CHUNK, FeatureBuilder, lookback_start, profile_chunks
from cdp.models.registry import Model

MIN_PROFILES = 50
MIN_PER_CLASS = 10
"""Fewer examples (or, for a classifier, fewer of either class; for a regression, fewer with a
non-zero label) make a held-out evaluation meaningless: training refuses."""
TEST_SHARE = 0.25
SEED = 0
SILHOUETTE_SAMPLE = 5000
"""Silhouette is quadratic in the rows: it is estimated on a sample this large."""
CALIBRATION_BINS = 10


class TooLittleData(UserError):
    """The store holds too few examples to train and evaluate the model."""


@dataclass
class TrainingSet:
    features: np.ndarray
    labels: np.ndarray | None
    """None when clustering."""
    cutoff: datetime
    feature_start: datetime | None
    label_end: datetime | None
    profiles: int
    """Live profiles looked at; `len(features)` of them had events before the cut-off."""


Progress = Callable[[int], None]
"""Called with the number of profiles looked at so far."""


def build_training_set(
    conn: Connection,
    model: Model,
    now: datetime,
    chunk: int = CHUNK,
    progress: Progress | None = None,
) -> TrainingSet:
    enricher = model.enricher
    target = enricher.target()
    cutoff = now - target.horizon if target is not None else now
    builder = FeatureBuilder(conn.dialect.name, list(enricher.features()))
    blocks: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    looked = 0
    for ids in profile_chunks(conn, chunk):
        matrix, seen = builder.matrix(conn, ids, cutoff)
        looked += len(ids)
        keep = seen > 0
        if keep.any():
            blocks.append(matrix[keep])
            if target is not None:
                labels.append(builder.labels(conn, ids, target, cutoff)[keep])
        if progress is not None:
            progress(looked)
    width = len(builder.features)
    return TrainingSet(
        features=np.vstack(blocks) if blocks else np.empty((0, width)),
        labels=(np.concatenate(labels) if labels else np.empty(0)) if target else None,
        cutoff=cutoff,
        feature_start=lookback_start(builder.features, cutoff),
        label_end=now if target is not None else None,
        profiles=looked,
    )


def fit_and_evaluate(model: Model, data: TrainingSet) -> tuple[Any, dict[str, Any]]:
    """Fit the enricher's estimator on the training split; evaluate it on the held-out one.
    Returns the fitted estimator and the metrics to store with it."""
    enricher = model.enricher
    task = enricher.task
    check_enough(model, data)
    X, y = data.features, data.labels
    stratify = y if task == "classification" else None
    rows = np.arange(len(X))
    train, test = train_test_split(rows, test_size=TEST_SHARE, random_state=SEED, stratify=stratify)
    estimator = enricher.estimator()
    began = time.monotonic()
    if task == "clustering":
        estimator.fit(X[train])
    else:
        assert y is not None
        estimator.fit(X[train], y[train])
    fitted = time.monotonic()
    metrics: dict[str, Any] = {
        "task": task,
        "profiles_considered": data.profiles,
        "examples": len(X),
        "train_size": len(train),
        "test_size": len(test),
    }
    if task == "classification":
        assert y is not None
        metrics |= _classification(estimator, X[test], y[train], y[test])
    elif task == "regression":
        assert y is not None
        metrics |= _regression(estimator, X[test], y[train], y[test])
    else:
        metrics |= _clustering(model, estimator, X, X[test])
    metrics["seconds"] = {
        "fit": round(fitted - began, 3),
        "evaluate": round(time.monotonic() - fitted, 3),
    }
    return estimator, metrics


def check_enough(model: Model, data: TrainingSet) -> None:
    n = len(data.features)
    where = f"model {model.name!r}: too little data to train"
    when = f"before the cut-off {data.cutoff:%Y-%m-%d %H:%M} UTC"
    if n < MIN_PROFILES:
        raise TooLittleData(
            f"{where}: {n} profiles had events {when}; at least {MIN_PROFILES} are needed"
        )
    y = data.labels
    if y is None:
        return
    if model.enricher.task == "classification":
        positives = int(y.sum())
        if min(positives, n - positives) < MIN_PER_CLASS:
            raise TooLittleData(
                f"{where}: of {n} profiles with events {when}, {positives} are positive and "
                f"{n - positives} negative in the label window; at least {MIN_PER_CLASS} of "
                f"each are needed"
            )
    elif int((y != 0).sum()) < MIN_PER_CLASS:
        raise TooLittleData(
            f"{where}: of {n} profiles with events {when}, {int((y != 0).sum())} have a "
            f"non-zero label; at least {MIN_PER_CLASS} are needed"
        )


# --- metrics ------------------------------------------------------------------------------------


def _classification(
    estimator: Any, X_test: np.ndarray, y_train: np.ndarray, y_test: np.ndarray
) -> dict[str, Any]:
    p = np.clip(estimator.predict_proba(X_test)[:, 1], 1e-6, 1 - 1e-6)
    base = float(y_train.mean())
    calibration = calibration_table(y_test, p)
    n = len(y_test)
    return {
        "positives_train": int(y_train.sum()),
        "positives_test": int(y_test.sum()),
        "positive_rate": round(base, 6),
        "auc": round(float(roc_auc_score(y_test, p)), 6),
        "log_loss": round(float(log_loss(y_test, p, labels=[0, 1])), 6),
        "baseline_log_loss": round(
            float(log_loss(y_test, np.full(n, min(max(base, 1e-6), 1 - 1e-6)), labels=[0, 1])), 6
        ),
        "brier": round(float(brier_score_loss(y_test, p)), 6),
        "calibration_error": round(
            sum(b["count"] * abs(b["predicted"] - b["observed"]) for b in calibration) / n, 6
        ),
        "calibration": calibration,
    }


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Predicted against observed positive rate in bins of equal size (by predicted score)."""
    order = np.argsort(p, kind="stable")
    table = []
    for part in np.array_split(order, min(bins, len(order))):
        if len(part):
            table.append(
                {
                    "predicted": round(float(p[part].mean()), 4),
                    "observed": round(float(y[part].mean()), 4),
                    "count": len(part),
                }
            )
    return table


def _regression(
    estimator: Any, X_test: np.ndarray, y_train: np.ndarray, y_test: np.ndarray
) -> dict[str, Any]:
    predicted = estimator.predict(X_test)
    baseline = np.full(len(y_test), float(y_train.mean()))
    return {
        "label_mean": round(float(y_train.mean()), 6),
        "label_zero_share": round(float((y_train == 0).mean()), 6),
        "mae": round(float(mean_absolute_error(y_test, predicted)), 6),
        "rmse": round(float(np.sqrt(mean_squared_error(y_test, predicted))), 6),
        "r2": round(float(r2_score(y_test, predicted)), 6),
        "baseline_mae": round(float(mean_absolute_error(y_test, baseline)), 6),
        "baseline_rmse": round(float(np.sqrt(mean_squared_error(y_test, baseline))), 6),
    }


def _clustering(model: Model, estimator: Any, X: np.ndarray, X_test: np.ndarray) -> dict[str, Any]:
    assigned = estimator.predict(X_test)
    space = estimator[:-1].transform(X_test) if isinstance(estimator, Pipeline) else X_test
    clusters = len(set(assigned.tolist()))
    silhouette = None
    if 2 <= clusters < len(X_test):
        silhouette = round(
            float(
                silhouette_score(
                    space,
                    assigned,
                    sample_size=min(len(X_test), SILHOUETTE_SAMPLE),
                    random_state=SEED,
                )
            ),
            6,
        )
    sizes: dict[str, int] = {}
    names = _cluster_names(model, estimator, X)
    for name in names:
        sizes[name] = sizes.get(name, 0) + 1
    final = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    inertia = getattr(final, "inertia_", None)
    return {
        "clusters": clusters,
        "silhouette": silhouette,
        "cluster_sizes": dict(sorted(sizes.items(), key=lambda kv: -kv[1])),
        **({"inertia": round(float(inertia), 6)} if inertia is not None else {}),
    }


def _cluster_names(model: Model, estimator: Any, X: np.ndarray) -> list[str]:
    """Each row's cluster as the enricher names it (its first label output), else its number."""
    labels = [o.name for o in model.outputs if o.kind == "label"]
    if labels:
        return [str(v) for v in model.enricher.score(estimator, X)[labels[0]]]
    return [str(v) for v in estimator.predict(X)]
