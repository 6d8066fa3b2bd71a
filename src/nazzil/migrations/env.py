"""Alembic environment: migrate on the connection that nazzil.db.upgrade() hands over."""

from __future__ import annotations

from alembic import context

from nazzil.db import VERSION_TABLE

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run nazzil's migrations with `nazzil db upgrade`")

context.configure(
    connection=connection,
    target_metadata=None,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
