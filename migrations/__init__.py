"""Alembic migrations; installed as the package `cdp_migrations` so `cdp migrate` finds them."""
