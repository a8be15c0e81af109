"""The request path's connections: psycopg 3's `AsyncConnectionPool`, set up to be safe behind
a transaction-mode pooler and to say why it cannot connect.

- Every connection is autocommitted and sends nothing that outlives a transaction: no startup
  options, no session SET, no server-side prepared statements unless DB_PREPARE_THRESHOLD
  asks for them. PgBouncer in transaction mode (Neon's -pooler endpoints) may hand each
  transaction another server connection.
- `configure` runs once per new connection: the role it logged in as must be one that
  row-level security binds (service.data.roles), or the connection is never used.
- `check` runs at checkout: a connection idle for DB_PING_IDLE_SECONDS or more is pinged
  first. When a ping fails, the database dropped its connections (a restart, Neon suspending an
  idle compute, a pooler closing idle clients): every idle connection of the pool is replaced
  at once rather than each failing a request of its own.
- Connections are opened on demand, at most DB_POOL_SIZE + DB_MAX_OVERFLOW per process; those
  idle for `IDLE_CLOSE_SECONDS` are closed.
"""

import logging
import time
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from service.config import Settings
from service.data.roles import ROLE_QUERY, RoleBypassesRowSecurity, rls_bypass_problem

log = logging.getLogger(__name__)

# A connection nobody used for this long is closed (psycopg_pool's max_idle).
IDLE_CLOSE_SECONDS = 600.0


class ServiceConnection(AsyncConnection[tuple[Any, ...]]):
    """A pooled connection that knows when it was last handed back."""

    last_used: float = 0.0


class ConnectFailures:
    """The most recent failure to open a usable connection, until one opens again.

    The pool connects in background tasks and tells a waiting request only that it timed out;
    this keeps the cause (refused, wrong password, a role RLS does not bind) for the one log
    line an operator reads.
    """

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: BaseException | None = None


def _connection_class(failures: ConnectFailures) -> type[ServiceConnection]:
    """ServiceConnection, remembering connection failures in `failures` (one class per pool:
    psycopg_pool takes a class, and calls its public `connect`)."""

    class Connection(ServiceConnection):
        @classmethod
        async def connect(cls, conninfo: str = "", **kwargs: Any) -> "Connection":
            try:
                connection = await super().connect(conninfo, **kwargs)
            except Exception as error:
                failures.last = error
                raise
            return connection

    return Connection


def create_pool(settings: Settings) -> tuple[AsyncConnectionPool[Any], ConnectFailures]:
    """The pool (not opened yet: `await pool.open()` in the app's lifespan) and where it keeps
    the cause of its last failure to connect."""
    failures = ConnectFailures()
    allow_bypass = settings.db_allow_rls_bypass
    ping_after = settings.db_ping_idle_seconds

    async def configure(connection: ServiceConnection) -> None:
        try:
            cursor = await connection.execute(ROLE_QUERY)
            row = await cursor.fetchone()
            assert row is not None  # noqa: S101 - pg_roles always has current_user
            problem = rls_bypass_problem(*row)
            if problem and not allow_bypass:
                raise RoleBypassesRowSecurity(problem)
        except Exception as error:
            failures.last = error
            raise
        if problem:
            log.warning("DB_ALLOW_RLS_BYPASS is set: %s", problem)
        failures.last = None
        connection.last_used = time.monotonic()  # just opened: no ping on its first use

    async def check(connection: ServiceConnection) -> None:
        if time.monotonic() - connection.last_used < ping_after:
            return  # recently used; a connection that broke since fails its request (503)
        try:
            await connection.execute("SELECT 1")
        except Exception:
            # Its siblings idled as long and are most likely gone too: replace them all now.
            # The pool discards this one and hands the request another.
            await pool.drain()
            raise

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.request_conninfo(),
        connection_class=_connection_class(failures),
        kwargs={
            "autocommit": True,
            # None: never prepare on the server; a transaction-mode pooler would lose them.
            "prepare_threshold": settings.db_prepare_threshold,
            "connect_timeout": settings.db_connect_timeout_seconds,
            "application_name": "tasks-api",
            # Notice a peer that vanished (a dropped network path, a frozen server) in seconds.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
        },
        min_size=0,
        max_size=settings.db_pool_size + settings.db_max_overflow,
        open=False,
        configure=configure,
        check=check,
        timeout=settings.db_pool_timeout_seconds,
        max_idle=IDLE_CLOSE_SECONDS,
        # A connection attempt that failed is retried for this long, then given up until a
        # request needs a connection again: a database that comes back is used at once,
        # not after a retry delay that doubled through a long outage.
        reconnect_timeout=settings.db_pool_timeout_seconds,
        name="tasks-api",
    )
    return pool, failures
