"""Query fields grouped by domain, mixed into the Query root (cdp.graphql.query)."""
