"""Changing the schema: migrations, and the privileges the service's role is given.

Synchronous, on psycopg2: it runs from the command line and test fixtures, never on the
request path.
"""

from importlib.resources import files

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, NullPool, create_engine, text
from sqlalchemy.engine import URL

from service.config import driver_url

# Any constant works; it only has to be the same in every process that migrates this database.
MIGRATION_LOCK_KEY = 0x7461736B73  # "tasks"
# All the request path does with a table; never TRUNCATE, REFERENCES or TRIGGER, nothing on
# alembic_version.
REQUEST_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")


def migrate(
    url: str | URL,
    schema: MetaData,
    *,
    grant_to: str | None = None,
    connect_timeout: int = 10,
) -> None:
    """Bring the database to the newest revision; safe when several processes start at once.

    A transaction-scoped advisory lock serialises concurrent migrators: the first applies
    the revisions, the others wait, then find nothing left to do. `grant_to` names the
    service's role, given REQUEST_PRIVILEGES on every table of `schema` (the service's
    tables, service.schema), so a new table can never be left without its grant.
    """
    if isinstance(url, str):
        url = driver_url(url, "psycopg2", "DATABASE_URL")
    engine = create_engine(
        url, poolclass=NullPool, connect_args={"connect_timeout": connect_timeout}
    )
    try:
        with engine.connect() as connection:
            lock = text("SELECT pg_advisory_xact_lock(:key)")
            connection.execute(lock, {"key": MIGRATION_LOCK_KEY})
            config = Config()
            config.set_main_option("script_location", str(files("service") / "migrations"))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            if grant_to is not None:
                quote = connection.dialect.identifier_preparer.quote
                role = quote(grant_to)
                tables = ", ".join(quote(table.name) for table in schema.sorted_tables)
                privileges = ", ".join(REQUEST_PRIVILEGES)
                connection.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
                connection.execute(text(f"GRANT {privileges} ON {tables} TO {role}"))
            connection.commit()
    finally:
        engine.dispose()
