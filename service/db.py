"""The database: one bounded engine per process, one session per request, and migrations."""

from collections.abc import Iterator
from importlib.resources import files
from typing import Annotated, Any

from alembic import command
from alembic.config import Config
from fastapi import Depends, Request
from sqlalchemy import Engine, NullPool, create_engine, make_url, text
from sqlalchemy.engine import URL
from sqlmodel import Session

from service.config import Settings

# Any constant works; it only has to be the same in every process that migrates this database.
_MIGRATION_LOCK_KEY = 0x7461736B73  # "tasks"


def database_url(raw: str) -> URL:
    """The configured URL with the driver the design fixes: psycopg2."""
    url = make_url(raw)
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg2")
    return url


def create_db_engine(settings: Settings) -> Engine:
    connect_args: dict[str, Any] = {
        "connect_timeout": settings.db_connect_timeout_seconds,
        "application_name": "tasks-api",
        # Notice a peer that vanished (a dropped network path, a frozen server) in seconds.
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 2,
    }
    if settings.db_statement_timeout_ms:
        connect_args["options"] = f"-c statement_timeout={settings.db_statement_timeout_ms}"
    return create_engine(
        database_url(settings.require_database_url()),
        # Checks a pooled connection before use, so a database restart costs no failed request.
        pool_pre_ping=True,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_args=connect_args,
        # Errors (and so logs) never carry statement parameters: titles are user data.
        hide_parameters=True,
    )


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def migrate(url: str) -> None:
    """Bring the schema to the newest revision; safe when several processes start at once.

    A transaction-scoped advisory lock serialises concurrent migrators: the first applies
    the revisions, the others wait, then find nothing left to do.
    """
    engine = create_engine(database_url(url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            lock = text("SELECT pg_advisory_xact_lock(:key)")
            connection.execute(lock, {"key": _MIGRATION_LOCK_KEY})
            config = Config()
            config.set_main_option("script_location", str(files("service") / "migrations"))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
    finally:
        engine.dispose()
