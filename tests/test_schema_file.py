from pathlib import Path

from cdp.graphql.schema import schema

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.graphql"


def test_schema_graphql_is_the_exported_schema():
    # Regenerate with: strawberry export-schema cdp.graphql.schema:schema --output schema.graphql
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema.as_str() + "\n", (
        "schema.graphql is stale: run "
        "`strawberry export-schema cdp.graphql.schema:schema --output schema.graphql`"
    )
