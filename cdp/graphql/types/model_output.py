from __future__ import annotations

import strawberry

from cdp.models.spec import Output


@strawberry.type(description="A score (a number) or a label (a string) a model writes.")
class ModelOutput:
    name: str = strawberry.field(description="The name in `Profile.scores` and conditions.")
    kind: str = strawberry.field(description="score or label")
    description: str

    @classmethod
    def from_output(cls, output: Output) -> ModelOutput:
        return cls(name=output.name, kind=output.kind, description=output.description)
