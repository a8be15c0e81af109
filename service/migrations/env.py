"""Alembic environment.

`tasks-api migrate` (service.data.admin.migrate) hands over a connection that already holds the
migration lock. Run by plain `alembic` (alembic.ini at the repository's root), it connects to
MIGRATION_DATABASE_URL, else DATABASE_URL, else the embedded PostgreSQL, and takes the same
lock, so revisions can be written (`alembic revision --autogenerate`) and inspected
(`alembic current`, `alembic check`) without a second way of applying them.
"""

from alembic import context
from sqlalchemy import Connection, NullPool, create_engine, text

from service.data.admin import MIGRATION_LOCK_KEY
from service.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


handed_over = context.config.attributes.get("connection")
if handed_over is not None:
    _run(handed_over)
else:
    from service.config import load_settings
    from service.data.embedded import resolve

    settings = resolve(load_settings())
    engine = create_engine(
        settings.migration_url(),
        poolclass=NullPool,
        connect_args={"connect_timeout": settings.db_connect_timeout_seconds},
    )
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        _run(connection)
        connection.commit()
    engine.dispose()
