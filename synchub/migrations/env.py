"""Alembic environment: runs on the connection synchub hands over (see synchub.migrate)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import synchub.store  # (registers the tables on the metadata)
import synchub.webhooks  # noqa: F401  (its queue table)

target_metadata = SQLModel.metadata
connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through synchub.migrate.upgrade(), which passes a connection")

context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTER TABLE needs batch mode
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
