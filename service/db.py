"""The database: one bounded engine per process, one session per request, and migrations."""

import select
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar
from importlib.resources import files
from typing import Annotated, Any

import psycopg2
import psycopg2.extensions
from alembic import command
from alembic.config import Config
from fastapi import Depends, Request
from sqlalchemy import Engine, NullPool, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session

from service.config import Settings


class _Budget:
    """The time a request's database work may take, counted from its first wait on the
    database, so time spent queueing for a thread or a connection is not charged to it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline: float | None = None

    def remaining(self) -> float:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.seconds
        return self.deadline - time.monotonic()


_budget: ContextVar[_Budget | None] = ContextVar("database_budget", default=None)


def _wait_until_deadline(connection: Any) -> None:
    """psycopg2's wait callback: every wait on the database gives up when the request's
    budget is spent.

    A database that stops answering without refusing (packets dropped, a frozen server or
    proxy) would otherwise hold the request, its thread and its connection until TCP gives
    up, many minutes later; libpq has no client-side timeout for that. Giving up closes the
    connection (psycopg2 does so when this raises), so the pool never hands it out again.
    """
    budget = _budget.get()
    while True:
        state = connection.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        remaining = None if budget is None else budget.remaining()
        if remaining is not None and remaining <= 0:
            raise psycopg2.OperationalError("the database did not answer in time")
        descriptor = connection.fileno()
        if state == psycopg2.extensions.POLL_READ:
            select.select([descriptor], [], [], remaining)
        else:
            select.select([], [descriptor], [], remaining)


psycopg2.extensions.set_wait_callback(_wait_until_deadline)


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
    engine = create_engine(
        database_url(settings.require_database_url()),
        # With DB_PING_IDLE_SECONDS=0, SQLAlchemy's own pre-ping checks every checkout.
        pool_pre_ping=settings.db_ping_idle_seconds == 0,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_args=connect_args,
        # Errors (and so logs) never carry statement parameters: titles are user data.
        hide_parameters=True,
        # Every request runs exactly one statement (a create is one statement too, its user
        # row in a CTE), so each statement is its own transaction: no BEGIN/COMMIT round
        # trips, and nothing to roll back when a connection goes back to the pool.
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,
    )
    if settings.db_ping_idle_seconds > 0:
        _ping_when_idle(engine, settings.db_ping_idle_seconds)
    return engine


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """pool_pre_ping, for connections that sat unused for `idle_seconds` or more.

    A ping is a round trip; under load it would double the cost of a one-statement request,
    while the connections that go stale (a database restart, Neon suspending an idle compute,
    a pooler closing idle clients) are the ones that waited. A connection that breaks while
    busy fails its request with a 503 and the pool replaces every connection of its age.
    """

    @event.listens_for(engine, "checkin")
    def _remember_last_use(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["last_used"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        last_used = record.info.get("last_used")
        if last_used is None or time.monotonic() - last_used < idle_seconds:
            return  # new, or recently used
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception as error:
            # The pool discards this connection and checks out (or opens) another.
            raise DisconnectionError from error


# async: creating and closing a Session does no I/O (the connection is checked out on first
# use, inside the handler's thread, and checked in without a rollback), so this costs no
# threadpool hop; the handler's own hop is the only one a request makes.
async def get_session(request: Request) -> AsyncIterator[Session]:
    settings: Settings = request.app.state.settings
    # Copied into the handler's thread with the rest of the request's context.
    _budget.set(_Budget(settings.db_request_timeout_seconds))
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
