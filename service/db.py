"""The database: an async engine on psycopg 3 for requests, psycopg2 for migrations.

Invariants of the request path:

- A request's database work is one autocommitted statement, run by `RequestDatabase.run` on a
  connection checked out for that statement alone. The connection is back in the pool before
  the response is built, so a client that reads slowly (or never) holds no connection.
  `RequestDatabase.transaction` is the unit of work for an operation that needs several.
- It all happens within a budget counted from the request's arrival (DB_REQUEST_TIMEOUT_SECONDS),
  and each statement within DB_STATEMENT_TIMEOUT_MS. Past either the request is answered 503
  at once, while the statement is cancelled on the server in the background.
- A signed-in user's statement runs with that user set for row-level security
  (`tasks_api.user_id`), in the statement's own transaction and in the same round trip; the
  role it runs as must be one that RLS binds (checked on every new connection).
- Nothing depends on session state, so a transaction-mode pooler (PgBouncer, Neon's -pooler
  endpoints) can hand every statement to another server connection: no startup options, no
  session SET, no server-side prepared statements unless DB_PREPARE_THRESHOLD asks for them.
"""

import asyncio
import collections
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any, TypeVar

from alembic import command
from alembic.config import Config
from psycopg.pq import ExecStatus
from sqlalchemy import NullPool, Result, Row, create_engine, event, text
from sqlalchemy.engine import URL, ExecutionContext
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.expression import Executable
from sqlalchemy.util import await_only, greenlet_spawn

from service.config import Settings, driver_url

if TYPE_CHECKING:
    from service.metrics import Metrics

T = TypeVar("T")

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every process that migrates this database.
MIGRATION_LOCK_KEY = 0x7461736B73  # "tasks"


class DeadlineExceeded(Exception):
    """The request's database budget, or its statement's, ran out."""


def create_db_engine(settings: Settings) -> AsyncEngine:
    connect_args: dict[str, Any] = {
        "connect_timeout": settings.db_connect_timeout_seconds,
        "application_name": "tasks-api",
        # None: never prepare on the server; a transaction-mode pooler would lose them.
        "prepare_threshold": settings.db_prepare_threshold,
        # Notice a peer that vanished (a dropped network path, a frozen server) in seconds.
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 2,
    }
    engine = create_async_engine(
        settings.request_path_url(),
        # With DB_PING_IDLE_SECONDS=0, SQLAlchemy's own pre-ping checks every checkout.
        pool_pre_ping=settings.db_ping_idle_seconds == 0,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_args=connect_args,
        # Errors (and so logs) never carry statement parameters: titles are user data.
        hide_parameters=True,
        # Each statement is its own transaction: no BEGIN/COMMIT round trips, and nothing to
        # roll back when a connection goes back to the pool.
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,
    )
    if settings.db_ping_idle_seconds > 0:
        _ping_when_idle(engine, settings.db_ping_idle_seconds)
    _refuse_roles_that_bypass_rls(engine, allow=settings.db_allow_rls_bypass)
    event.listen(engine.sync_engine, "do_execute", _execute_as_row_owner)
    return engine


def _ping_when_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    """pool_pre_ping, for connections that sat unused for `idle_seconds` or more.

    A ping is a round trip; under load it would double the cost of a one-statement request,
    while the connections that go stale (a database restart, Neon suspending an idle compute,
    a pooler closing idle clients) are the ones that waited. A connection that breaks while
    busy fails its request with a 503 and the pool replaces every connection of its age.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _remember_last_use(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["last_used"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        last_used = record.info.get("last_used")
        if last_used is None or time.monotonic() - last_used < idle_seconds:
            return  # new, or recently used
        try:
            # Checkout runs inside SQLAlchemy's greenlet, where the async driver is awaited.
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        except Exception as error:
            # The pool discards this connection and checks out (or opens) another.
            raise DisconnectionError from error


# What the service's role may not be: row-level security does not bind it. On Neon, roles made
# in the Console, CLI or API belong to neon_superuser, which bypasses RLS as well.
ROLE_QUERY = (
    "SELECT current_user AS role, rolsuper AS superuser, rolbypassrls AS bypassrls, "
    "EXISTS (SELECT 1 FROM pg_roles AS neon WHERE neon.rolname = 'neon_superuser' "
    "AND pg_has_role(current_user, neon.oid, 'MEMBER')) AS neon_superuser "
    "FROM pg_roles WHERE rolname = current_user"
)


class RoleBypassesRowSecurity(Exception):
    """The service's database role is not bound by row-level security."""


def rls_bypass_problem(role: str, superuser: bool, bypassrls: bool, neon_superuser: bool) -> str:
    """Why `role` must not serve requests, or "" when it may."""
    if superuser:
        what = "is a superuser"
    elif bypassrls:
        what = "has BYPASSRLS"
    elif neon_superuser:
        what = "is a member of neon_superuser (every role made in Neon's Console, CLI or API is)"
    else:
        return ""
    return (
        f"the database role {role!r} {what}, so row-level security does not bind it. Connect "
        "with a role created by SQL with NOSUPERUSER NOBYPASSRLS and only SELECT, INSERT, "
        "UPDATE, DELETE on users and tasks (docs/DEPLOY.md, 'Least privilege'), or set "
        "DB_ALLOW_RLS_BYPASS=1 to run anyway"
    )


def _refuse_roles_that_bypass_rls(engine: AsyncEngine, *, allow: bool) -> None:
    """Check every new connection's role: a role that RLS does not bind is never used, unless
    DB_ALLOW_RLS_BYPASS says so (and then every new connection says so in the log)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _check_role(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(ROLE_QUERY)
        problem = rls_bypass_problem(*cursor.fetchone())
        cursor.close()
        if not problem:
            return
        if allow:
            log.warning("DB_ALLOW_RLS_BYPASS is set: %s", problem)
            return
        dbapi_connection.close()
        raise RoleBypassesRowSecurity(problem)


# The request's user, for the row-level security policies (migration 0002). Transaction-local:
# it ends with the statement's transaction, so a pooled connection carries nothing over.
_SET_ROW_OWNER = "SELECT set_config('tasks_api.user_id', %s, true)"
# The execution option that names it, set by RequestDatabase for a signed-in user.
_ROW_OWNER = "tasks_api_row_owner"


def _execute_as_row_owner(
    cursor: Any, statement: str, parameters: Any, context: ExecutionContext
) -> bool:
    """SQLAlchemy's do_execute hook: a statement with a row owner runs with the owner set."""
    owner = context.execution_options.get(_ROW_OWNER)
    if owner is None:
        return False  # SQLAlchemy executes it as usual
    await_only(_pipelined_as(owner, cursor, statement, parameters))
    return True


async def _pipelined_as(owner: str, cursor: Any, statement: str, parameters: Any) -> None:
    """`set_config` and the statement in one round trip and one transaction.

    In pipeline mode psycopg sends both, then a single Sync; everything before a Sync is one
    implicit transaction on the server, so the transaction-local setting holds for the
    statement and ends with it. `cursor` is SQLAlchemy's adapter around psycopg's cursor:
    the statement runs on psycopg's cursor, and its rows are handed to the adapter the way the
    adapter's own execute would (pinned by sqlalchemy<2.2; the RLS tests fail if it changes).
    """
    driver_cursor = cursor._cursor
    connection = driver_cursor.connection
    async with connection.pipeline():
        # One cursor for both: in a pipeline each result is handed to its cursor in order,
        # so the statement's result is the one the cursor holds at the end.
        await driver_cursor.execute(_SET_ROW_OWNER, (owner,))
        await driver_cursor.execute(statement, parameters)
    result = driver_cursor.pgresult
    if result is not None and result.status == ExecStatus.TUPLES_OK:
        cursor._rows = collections.deque(await driver_cursor.fetchall())


@dataclass(frozen=True, slots=True)
class Database:
    """The request path's PostgreSQL: one per process."""

    engine: AsyncEngine
    request_seconds: float
    statement_seconds: float | None
    metrics: "Metrics | None" = None

    @classmethod
    def from_settings(cls, settings: Settings, metrics: "Metrics | None" = None) -> "Database":
        return cls(
            engine=create_db_engine(settings),
            request_seconds=settings.db_request_timeout_seconds,
            statement_seconds=settings.db_statement_timeout_ms / 1000 or None,
            metrics=metrics if metrics is not None and metrics.enabled else None,
        )

    def for_request(self, arrived_at: float, owner: uuid.UUID | None) -> "RequestDatabase":
        """Database access for a request that arrived at `arrived_at` (time.monotonic()), on
        behalf of `owner`: row-level security lets its statements reach that user's rows
        only, and with no owner, no user's rows."""
        return RequestDatabase(self, arrived_at + self.request_seconds, owner)


# Statements cancelled at their deadline finish (or are closed) in the background; kept here so
# they are not garbage-collected half way.
_abandoned: set["asyncio.Task[Any]"] = set()


def _forget(task: "asyncio.Task[Any]") -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not report it as lost


class RequestDatabase:
    """One request's access to the database, within the request's budget."""

    __slots__ = ("_database", "_deadline", "_options")

    def __init__(self, database: Database, deadline: float, owner: uuid.UUID | None) -> None:
        self._database = database
        self._deadline = deadline
        # The execution option the do_execute hook reads; empty for probes (no user).
        self._options = {} if owner is None else {_ROW_OWNER: str(owner)}

    async def one_or_none(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Row[Any] | None:
        return await self.run(_first, statement, parameters)

    async def all(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        return await self.run(_all, statement, parameters)

    async def run(
        self,
        fetch: Callable[[Result[Any]], T],
        statement: Executable,
        parameters: Mapping[str, Any] | None = None,
    ) -> T:
        """One autocommitted statement, on a pooled connection held only while it runs.

        Checkout, execution, fetching every row and checkin all happen in one greenlet: the
        way SQLAlchemy's asyncio extension runs synchronous-style code (what
        `AsyncConnection.run_sync` does), without a separate hop for each of the four.
        """
        engine = self._database.engine.sync_engine
        options = self._options
        metrics = self._database.metrics

        def checked_out() -> T:
            with engine.connect() as connection:
                return fetch(connection.execute(statement, parameters, execution_options=options))

        def counted() -> T:
            # The same, with the pool's waiting and in-use connections counted (METRICS_TOKEN).
            assert metrics is not None  # noqa: S101 - chosen below only when metrics are on
            metrics.waiting_for_connection(1)
            try:
                connection = engine.connect()
            finally:
                metrics.waiting_for_connection(-1)
            metrics.connection_in_use(1)
            try:
                with connection:
                    return fetch(
                        connection.execute(statement, parameters, execution_options=options)
                    )
            finally:
                metrics.connection_in_use(-1)

        statement_seconds = self._database.statement_seconds
        deadline = self._deadline
        if statement_seconds is not None:
            deadline = min(deadline, time.monotonic() + statement_seconds)
        return await _before(deadline, greenlet_spawn(checked_out if metrics is None else counted))

    async def transaction(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`work` in one READ COMMITTED transaction: committed if it returns, else rolled back.

        Row-level security binds it to the request's user, each statement in it is bounded by
        DB_STATEMENT_TIMEOUT_MS on the server, and the whole by the request's budget. Costs
        one round trip more than the single-statement path, for the settings.
        """

        async def unit() -> T:
            async with self._database.engine.connect() as autocommit:
                connection = await autocommit.execution_options(isolation_level="READ COMMITTED")
                async with connection.begin():
                    # Both transaction-local: nothing outlives the transaction.
                    milliseconds = int((self._database.statement_seconds or 0) * 1000)
                    await connection.execute(
                        text(
                            "SELECT set_config('statement_timeout', :ms, true), "
                            "set_config('tasks_api.user_id', :owner, true)"
                        ),
                        {"ms": str(milliseconds), "owner": self._options.get(_ROW_OWNER, "")},
                    )
                    return await work(connection)

        return await _before(self._deadline, unit())


def _first(result: Result[Any]) -> Row[Any] | None:
    return result.first()


def _all(result: Result[Any]) -> Sequence[Row[Any]]:
    return result.all()


async def _before(deadline: float, work: Coroutine[Any, Any, T]) -> T:
    """The result of `work`, or DeadlineExceeded as soon as `deadline` passes.

    `work` runs as a task of its own: on a timeout it is cancelled but not awaited, because
    psycopg answers a cancellation by cancelling the statement on the server and then waiting
    (up to seconds, against a frozen server) before it closes the connection. The request must
    not wait for that; the connection is discarded either way.
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        work.close()
        raise DeadlineExceeded
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait((task,), timeout=remaining)
    except asyncio.CancelledError:
        task.cancel()  # the request itself was cancelled (shutdown): take the statement along
        raise
    if not done:
        task.cancel()
        _abandoned.add(task)
        task.add_done_callback(_forget)
        raise DeadlineExceeded
    return task.result()


# libpq does not put passwords in its messages; these catch a URL or conninfo echoed anyway.
_PASSWORD_IN_CONNINFO = re.compile(r"(password\s*=\s*)\S+", re.IGNORECASE)
_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def describe_database_error(error: BaseException) -> str:
    """One log line's worth of what went wrong: the server's or driver's own message (which
    names host, port and cause), never a password."""
    if isinstance(error, DeadlineExceeded):
        return "the database did not answer within the request's deadline"
    cause = getattr(error, "orig", None) or error
    message = " ".join(str(cause).split()).split(" (Background on this error at:")[0]
    message = _PASSWORD_IN_URL.sub(r"\1***@", _PASSWORD_IN_CONNINFO.sub(r"\1***", message))
    return f"{type(cause).__name__}: {message or 'no message'}"


def migrate(url: str | URL, *, grant_to: str | None = None, connect_timeout: int = 10) -> None:
    """Bring the schema to the newest revision; safe when several processes start at once.

    A transaction-scoped advisory lock serialises concurrent migrators: the first applies
    the revisions, the others wait, then find nothing left to do. Synchronous, on psycopg2.
    `grant_to` names the service's role, given only what the request path needs.
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
                role = connection.dialect.identifier_preparer.quote(grant_to)
                connection.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
                connection.execute(
                    text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON users, tasks TO {role}")
                )
            connection.commit()
    finally:
        engine.dispose()
