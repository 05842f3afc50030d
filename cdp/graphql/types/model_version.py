from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from cdp.db.models import ModelVersion as ModelVersionRow
from cdp.models.report import report


@strawberry.type(description="One trained version of a model, with its held-out evaluation.")
class ModelVersion:
    model: str
    version: int
    active: bool
    type: str
    task: str = strawberry.field(description="classification, regression or clustering")
    trained_at: datetime
    training_seconds: float
    metrics: JSON = strawberry.field(
        description="Sizes, class balance and the held-out evaluation: AUC, log-loss and a "
        "calibration table (classifiers), MAE/RMSE/R² against the trivial baseline (regression), "
        "silhouette and cluster sizes (clustering)."
    )
    features: list[str]
    cutoff: datetime = strawberry.field(
        description="Features came from events before it; labels from the window after it."
    )
    feature_start: datetime | None = strawberry.field(description="The features' lookback.")
    label_end: datetime | None
    code_version: str
    artefact_format: str
    artefact_sha256: str
    report: str = strawberry.field(description="The evaluation as text (`cdp models train`).")

    @classmethod
    def from_row(cls, row: ModelVersionRow, active: bool) -> ModelVersion:
        return cls(
            model=row.model,
            version=row.version,
            active=active,
            type=row.type,
            task=row.task,
            trained_at=row.trained_at,
            training_seconds=row.training_seconds,
            metrics=row.metrics,
            features=list(row.features),
            cutoff=row.cutoff,
            feature_start=row.feature_start,
            label_end=row.label_end,
            code_version=row.code_version,
            artefact_format=row.artefact_format,
            artefact_sha256=row.artefact_sha256,
            report=report(row),
        )
