"""A trained version's evaluation report, as text: what `cdp models train` prints and the
GraphQL `ModelVersion.report` field returns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cdp.db.models import ModelVersion


def report(version: ModelVersion) -> str:
    m: dict[str, Any] = version.metrics
    lines = [
        f"model {version.model} version {version.version} ({version.type}, {version.task}), "
        f"trained {_at(version.trained_at)} in {version.training_seconds:.1f}s",
        _window(version),
        f"examples: {m['examples']:,} of {m['profiles_considered']:,} profiles "
        f"({m['train_size']:,} to train, {m['test_size']:,} held out)",
    ]
    if version.task == "classification":
        lines += _classification(m)
    elif version.task == "regression":
        lines += _regression(m)
    else:
        lines += _clustering(m)
    if "seconds" in m:
        lines.append("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in m["seconds"].items()))
    lines += [
        f"features ({len(version.features)}): {', '.join(version.features)}",
        f"artefact: {version.artefact_format}, sha256 {version.artefact_sha256[:16]}…",
        f"code: {version.code_version}",
    ]
    return "\n".join(lines)


def _at(when: datetime | None) -> str:
    return f"{when:%Y-%m-%d %H:%M} UTC" if when else "-"


def _window(version: ModelVersion) -> str:
    start = _at(version.feature_start) if version.feature_start else "the first event"
    text = f"features: events from {start} to before {_at(version.cutoff)}"
    if version.label_end is not None:
        text += f"; labels: events from {_at(version.cutoff)} to before {_at(version.label_end)}"
    return text


def _classification(m: dict[str, Any]) -> list[str]:
    lines = [
        f"class balance: {m['positives_train']:,} positive in training, "
        f"{m['positives_test']:,} held out ({m['positive_rate']:.1%} positive)",
        f"held out: AUC {m['auc']:.3f} (trivial 0.500), log-loss {m['log_loss']:.3f} "
        f"(trivial {m['baseline_log_loss']:.3f}), Brier {m['brier']:.3f}, "
        f"calibration error {m['calibration_error']:.3f}",
        "calibration (mean predicted → observed rate, profiles), by predicted decile:",
    ]
    lines += [
        f"  {b['predicted']:.3f} → {b['observed']:.3f}  ({b['count']:,})" for b in m["calibration"]
    ]
    return lines


def _regression(m: dict[str, Any]) -> list[str]:
    return [
        f"label: mean {m['label_mean']:.2f}, zero for {m['label_zero_share']:.1%} of profiles",
        f"held out: MAE {m['mae']:.2f} (trivial {m['baseline_mae']:.2f}), RMSE {m['rmse']:.2f} "
        f"(trivial {m['baseline_rmse']:.2f}), R² {m['r2']:.3f}",
    ]


def _clustering(m: dict[str, Any]) -> list[str]:
    silhouette = "n/a" if m["silhouette"] is None else f"{m['silhouette']:.3f}"
    sizes = ", ".join(f"{name}: {size:,}" for name, size in m["cluster_sizes"].items())
    return [
        f"held out: silhouette {silhouette} over {m['clusters']} clusters",
        f"cluster sizes: {sizes}",
    ]
