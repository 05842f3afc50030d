"""The GraphQL API: schema, types, context and the ASGI view."""
