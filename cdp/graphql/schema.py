"""Building the schema with its limits; `schema` is what `schema.graphql` is exported from."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import strawberry
from graphql import GraphQLError
from starlette.websockets import WebSocket
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)

from cdp.config import Config, GraphQLConfig
from cdp.errors import UserError
from cdp.graphql.context import Context
from cdp.graphql.loaders import Loaders
from cdp.graphql.mutations.decisions import DecisionMutations
from cdp.graphql.mutations.identity import IdentityMutations
from cdp.graphql.mutations.ingest import IngestMutations
from cdp.graphql.mutations.models import ModelMutations
from cdp.graphql.mutations.offers import OfferMutations
from cdp.graphql.mutations.segments import SegmentMutations
from cdp.graphql.mutations.sources import SourceMutations
from cdp.graphql.query import Query
from cdp.graphql.subscription import Subscription

log = logging.getLogger("cdp.graphql")
CACHE_SIZE = 512


def _is_internal(error: GraphQLError) -> bool:
    """Everything but validation errors and errors raised on purpose for the client."""
    original = error.original_error
    return not (original is None or isinstance(original, UserError | GraphQLError))


class Schema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        # Called before masking: internal errors are logged in full here, and only here.
        for error in errors:
            if _is_internal(error):
                log.error(
                    "internal error in GraphQL: %s", error.path, exc_info=error.original_error
                )
            else:
                log.debug("GraphQL client error: %s", error.message)


class FreshLoaders(SchemaExtension):
    """Over WebSocket one context serves every operation of the connection: each operation gets
    DataLoaders of its own, so that none is answered from another's cached rows."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context.context
        if isinstance(context, Context) and isinstance(context.request, WebSocket):
            context.loaders = Loaders(context.read, context.refresh_scores)
        yield


def build_extensions(
    limits: GraphQLConfig, introspection: bool
) -> list[Callable[[], SchemaExtension]]:
    # The limiters create a new validation-rule class per instance; a new class per request
    # would miss the validation cache every time. So the rule classes are made here, once,
    # and every request's extension reuses the same classes.
    rules = (
        QueryDepthLimiter(max_depth=limits.max_depth).validation_rules
        + MaxAliasesLimiter(max_alias_count=limits.max_aliases).validation_rules
        + ([] if introspection else DisableIntrospection().validation_rules)
    )
    return [
        lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
        lambda: ParserCache(maxsize=CACHE_SIZE),
        lambda: AddValidationRules(rules),
        lambda: ValidationCache(maxsize=CACHE_SIZE),
        lambda: MaskErrors(should_mask_error=_is_internal, error_message="Internal server error"),
        FreshLoaders,
    ]


@strawberry.type
class Mutation(
    IngestMutations,
    IdentityMutations,
    SourceMutations,
    SegmentMutations,
    DecisionMutations,
    OfferMutations,
    ModelMutations,
):
    pass


def build_schema(config: Config) -> Schema:
    return Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=build_extensions(config.graphql, introspection=config.development),
    )


schema = build_schema(Config())
