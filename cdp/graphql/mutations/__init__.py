"""Mutations, grouped by domain; `Mutation` in cdp/graphql/schema.py combines them."""
