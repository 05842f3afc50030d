"""`trainModel` and `rollbackModel`: an admin trains a new version now, or switches versions."""

from __future__ import annotations

import strawberry
from starlette.concurrency import run_in_threadpool

from cdp.errors import CDPError, UserError
from cdp.graphql.context import Info
from cdp.graphql.permissions import ADMIN
from cdp.graphql.types.model import Model
from cdp.graphql.types.model_version import ModelVersion
from cdp.models import catalog


@strawberry.type
class ModelMutations:
    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Train a new version of the model on the store's data now (in a worker "
        "thread; the request waits for it), make it active and return it with its held-out "
        "evaluation. Profiles' scores follow at the next scoring, or when read.",
    )
    async def train_model(self, info: Info, name: str) -> ModelVersion:
        runtime = info.context.runtime

        def train() -> ModelVersion:
            from cdp.models import service  # scikit-learn: imported when first needed

            try:
                row = service.train(runtime, name)
            except UserError:  # unknown name, too little data: the admin's to act on
                raise
            except CDPError as exc:
                raise UserError(str(exc)) from None
            return ModelVersion.from_row(row, active=True)

        return await run_in_threadpool(train)

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Make a stored version of the model the active one (a rollback). Profiles' "
        "scores follow at the next scoring, or when read.",
    )
    async def rollback_model(self, info: Info, name: str, version: int) -> Model:
        runtime = info.context.runtime
        if version < 1:
            raise UserError("version: versions are numbered from 1")

        def rollback() -> Model:
            from cdp.models import service

            try:
                service.rollback(runtime, name, version)  # unknown name or version: UserError
            except UserError:
                raise
            except CDPError as exc:
                raise UserError(str(exc)) from None
            [item] = catalog.overview(runtime, [name])
            return Model.build(item)

        return await run_in_threadpool(rollback)
