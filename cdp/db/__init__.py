"""Storage: the SQLAlchemy engine, the table models and the alembic migrations."""
