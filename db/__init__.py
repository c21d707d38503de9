"""Persistence: SQLAlchemy 2 models, engine/session setup, queries, Alembic migrations (never torch)."""
