"""Alembic environment: runs on the connection `service.db.migrate` hands over."""

from alembic import context
from sqlmodel import SQLModel

import service.models  # noqa: F401 - registers the tables on SQLModel.metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Run migrations with `tasks-api migrate`, which holds the migration lock.")

context.configure(connection=connection, target_metadata=SQLModel.metadata)
with context.begin_transaction():
    context.run_migrations()
