"""Per-request database access, on psycopg 3's public async API.

Invariants of the request path:

- A request's database work is one autocommitted statement (`RequestDatabase.first`/`all`),
  on a pooled connection checked out for that statement alone. The connection is back in the
  pool before the response is built, so a client that reads slowly (or never) holds no
  connection. `RequestDatabase.transaction` is the unit of work for an operation that needs
  several statements.
- It all happens within a budget counted from the request's arrival (DB_REQUEST_TIMEOUT_SECONDS),
  and each statement within DB_STATEMENT_TIMEOUT_MS. Past either, the request is answered 503
  at once while the statement is cancelled on the server in the background.
- A signed-in user's statement runs with that user set for row-level security
  (`tasks_api.user_id`), in the statement's own transaction and in the same round trip: psycopg's
  pipeline sends `set_config` and the statement, then a single Sync, and everything before a
  Sync is one implicit transaction on the server. The setting is transaction-local, so a pooled
  connection carries nothing over.
- Statements are SQL text with named parameters (resources build them once with SQLAlchemy
  Core, service.data.sql), and rows are plain tuples in the statement's column order.
"""

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry.trace import SpanKind
from psycopg.errors import UniqueViolation
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from service.config import Settings
from service.data.errors import ConnectFailed, DeadlineExceeded
from service.data.idempotency import (
    FORGET_EXPIRED,
    PRIMARY_KEY,
    PURGE,
    PURGE_BATCH,
    PURGE_INTERVAL_SECONDS,
    Claim,
    Idempotent,
    KeyReused,
    Outcome,
    Row,
)
from service.data.pool import ConnectFailures, ServiceConnection, create_pool
from service.data.spans import (
    POOL_WAIT_SPAN,
    WAIT_SPAN_MIN_NS,
    server_attributes,
    statement_span,
)
from service.metrics import Metrics
from service.tracing import sampled_parent

if TYPE_CHECKING:
    from service.span_recorder import SpanRecorder

T = TypeVar("T")

# The request's user, for the row-level security policies (migration 0002).
SET_ROW_OWNER = "SELECT set_config('tasks_api.user_id', %s, true)"
_SET_TRANSACTION = (
    "SELECT set_config('statement_timeout', %s, true), set_config('tasks_api.user_id', %s, true)"
)


class PurgeSchedule:
    """When this process next purges expired idempotency keys (time.monotonic())."""

    __slots__ = ("due",)

    def __init__(self) -> None:
        self.due = 0.0


@dataclass(frozen=True, slots=True)
class Database:
    """The request path's PostgreSQL: one pool per process, opened by the app's lifespan.

    Requests queue for a connection on `turns`, a semaphore with one permit per connection the
    pool may hold, so the pool itself never has a request waiting: psycopg_pool's own queue
    spends a task and a timer on every waiting request, which cost a busy worker about a
    quarter of its CPU (docs/PERFORMANCE.md).
    """

    pool: AsyncConnectionPool[Any]
    failures: ConnectFailures
    turns: asyncio.Semaphore
    pool_timeout: float
    request_seconds: float
    statement_seconds: float | None
    metrics: Metrics | None = None
    purge: PurgeSchedule = field(default_factory=PurgeSchedule)
    # When tracing is on: the recorder of spans, and what every database span says of the
    # server.
    recorder: "SpanRecorder | None" = None
    server: Mapping[str, str | int] = field(default_factory=dict)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        metrics: Metrics | None = None,
        recorder: "SpanRecorder | None" = None,
    ) -> "Database":
        pool, failures = create_pool(settings)
        return cls(
            pool=pool,
            failures=failures,
            turns=asyncio.Semaphore(pool.max_size),
            pool_timeout=settings.db_pool_timeout_seconds,
            request_seconds=settings.db_request_timeout_seconds,
            statement_seconds=settings.db_statement_timeout_ms / 1000 or None,
            metrics=metrics if metrics is not None and metrics.enabled else None,
            recorder=recorder,
            server={} if recorder is None else server_attributes(settings),
        )

    async def open(self) -> None:
        """Start the pool; it connects on demand, so this does no I/O."""
        await self.pool.open()

    async def close(self) -> None:
        await self.pool.close()

    def for_request(self, arrived_at: float, owner: uuid.UUID | None) -> "RequestDatabase":
        """Database access for a request that arrived at `arrived_at` (time.monotonic()), on
        behalf of `owner`: row-level security lets its statements reach that user's rows
        only, and with no owner, no user's rows."""
        return RequestDatabase(self, arrived_at + self.request_seconds, owner)


class _CheckedOut:
    """A pooled connection for the length of an `async with`, counted in the metrics when
    they are on; handed back stamped with its last use (for the pool's idle ping)."""

    __slots__ = ("_connection", "_database")

    def __init__(self, database: Database) -> None:
        self._database = database
        self._connection: ServiceConnection | None = None

    async def __aenter__(self) -> ServiceConnection:
        recorder = self._database.recorder
        parent = None if recorder is None else sampled_parent()
        if recorder is None or parent is None:
            return await self._check_out()
        # A span only for a wait that took time (a connection busy, or one being opened): a
        # free connection is handed over in microseconds, and a span would cost more than
        # the wait. Made after the fact, with the wait's own start and end.
        started = time.time_ns()
        error: BaseException | None = None
        try:
            return await self._check_out()
        except BaseException as failure:
            error = failure
            raise
        finally:
            ended = time.time_ns()
            if error is not None or ended - started >= WAIT_SPAN_MIN_NS:
                recorder.record(
                    POOL_WAIT_SPAN,
                    SpanKind.INTERNAL,
                    parent,
                    started_ns=started,
                    ended_ns=ended,
                    # Nothing of the server: the statement that follows it says that, and
                    # an attribute costs every span ~2 µs to record and encode.
                    attributes={},
                    error=error,
                )

    async def _check_out(self) -> ServiceConnection:
        database = self._database
        metrics = database.metrics
        if metrics is not None:
            metrics.waiting_for_connection(1)
        waited_until = time.monotonic() + database.pool_timeout
        try:
            await _acquire(database.turns, database.pool_timeout)
            try:
                remaining = max(waited_until - time.monotonic(), 0.001)
                self._connection = await database.pool.getconn(timeout=remaining)
            except BaseException:
                database.turns.release()
                raise
        except PoolTimeout:
            # The pool says only that it waited; say why, when it could not connect.
            if database.failures.last is not None:
                raise ConnectFailed(database.failures.last) from None
            raise
        finally:
            if metrics is not None:
                metrics.waiting_for_connection(-1)
        if metrics is not None:
            metrics.connection_in_use(1)
        return self._connection

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection = self._connection
        assert connection is not None  # noqa: S101 - set by __aenter__
        connection.last_used = time.monotonic()
        database = self._database
        if database.metrics is not None:
            database.metrics.connection_in_use(-1)
        try:
            await database.pool.putconn(connection)  # discarded by the pool if it broke
        finally:
            database.turns.release()
        if connection.broken:
            # The server or the network dropped it mid-statement; its siblings opened as long
            # ago are likely gone as well (a restart, a failover): replace them now.
            await database.pool.drain()


async def _acquire(turns: asyncio.Semaphore, timeout: float) -> None:
    """A permit of `turns`, or PoolTimeout after `timeout` seconds (DB_POOL_TIMEOUT_SECONDS)."""
    if not turns.locked():
        await turns.acquire()  # a free permit: taken at once, no timer needed
        return
    try:
        async with asyncio.timeout(timeout):
            await turns.acquire()
    except TimeoutError:
        raise PoolTimeout(f"no connection was free within {timeout:g} s") from None


class RequestDatabase:
    """One request's access to the database, within the request's budget."""

    __slots__ = ("_database", "_deadline", "_owner")

    def __init__(self, database: Database, deadline: float, owner: uuid.UUID | None) -> None:
        self._database = database
        self._deadline = deadline
        self._owner = None if owner is None else str(owner)

    async def first(self, sql: str, parameters: Mapping[str, Any] | None = None) -> Row | None:
        """The statement's first row, or None."""
        rows = await self.all(sql, parameters)
        return rows[0] if rows else None

    async def all(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[Row]:
        """Every row of one autocommitted statement (one that returns rows: a SELECT, or a
        write with RETURNING), on a connection held only while it runs."""
        deadline = self._deadline
        statement_seconds = self._database.statement_seconds
        if statement_seconds is not None:
            deadline = min(deadline, time.monotonic() + statement_seconds)
        return await _before(deadline, self._rows(sql, parameters))

    async def _rows(self, sql: str, parameters: Mapping[str, Any] | None) -> list[Row]:
        async with _CheckedOut(self._database) as connection:
            recorder = self._database.recorder
            parent = None if recorder is None else sampled_parent()
            if recorder is None or parent is None:
                return await self._run(connection, sql, parameters)
            # A leaf, recorded once over: nothing runs inside it that could be its child.
            started = time.time_ns()
            error: BaseException | None = None
            try:
                return await self._run(connection, sql, parameters)
            except BaseException as failure:
                error = failure  # recorded by its type alone
                raise
            finally:
                name, attributes = statement_span(sql, self._database.server)
                recorder.record(
                    name,
                    SpanKind.CLIENT,
                    parent,
                    started_ns=started,
                    ended_ns=time.time_ns(),
                    attributes=attributes,
                    error=error,
                )

    async def _run(
        self, connection: ServiceConnection, sql: str, parameters: Mapping[str, Any] | None
    ) -> list[Row]:
        cursor = connection.cursor()
        if self._owner is None:
            await cursor.execute(sql, parameters)
        else:
            async with connection.pipeline():
                # One cursor for both: in a pipeline each result is handed to its cursor in
                # order, so the statement's is the one the cursor holds at the end.
                await cursor.execute(SET_ROW_OWNER, (self._owner,))
                await cursor.execute(sql, parameters)
        return await cursor.fetchall()

    async def transaction(self, work: Callable[[ServiceConnection], Awaitable[T]]) -> T:
        """`work` in one READ COMMITTED transaction: committed if it returns, else rolled back.

        Row-level security binds it to the request's user, each statement in it is bounded by
        DB_STATEMENT_TIMEOUT_MS on the server, and the whole by the request's budget. Costs
        one round trip more than the single-statement path, for the settings.
        """
        milliseconds = str(int((self._database.statement_seconds or 0) * 1000))

        async def unit() -> T:
            async with _CheckedOut(self._database) as connection, connection.transaction():
                # Both transaction-local: nothing outlives the transaction.
                await connection.execute(_SET_TRANSACTION, (milliseconds, self._owner or ""))
                return await work(connection)

        return await _before(self._deadline, unit())

    async def once(
        self,
        write: Idempotent,
        parameters: Mapping[str, Any],
        claim: Claim,
        respond: Callable[[list[Row]], Outcome],
        replay: Callable[[list[Row]], Outcome],
    ) -> tuple[Outcome, bool]:
        """`write`, at most once per idempotency key (service.data.idempotency): the outcome
        `respond` renders from its rows and False, or, when the key was used before for the
        same request, what `replay` renders from the rows stored then and True. KeyReused
        when the key was used for another request. Whatever `respond` raises (the write did
        not happen) is raised, unless the key holds an earlier success to replay."""
        owner = self._owner or ""
        await self._purge_when_due()
        claiming = {**parameters, **claim.parameters(owner)}
        names = {"owner": owner, "claim_key": claim.key}
        for _ in range(2):  # again only after removing an expired key
            failure: Exception | None = None
            try:
                rows = await self.all(write.sql, claiming)
            except UniqueViolation as taken:
                if taken.diag.constraint_name != PRIMARY_KEY:
                    raise
            else:
                try:
                    return respond(rows), False
                # Raised below, unless the key holds an earlier success to replay.
                except Exception as error:
                    failure = error
            stored = write.stored(await self.all(write.replay, names))
            if stored is not None and stored.expired:
                await self.all(FORGET_EXPIRED, names)
                stored = None
            if stored is None:
                if failure is not None:
                    raise failure
                continue  # expired (or purged) in the way: the write runs again
            if stored.fingerprint != claim.fingerprint:
                raise KeyReused
            if stored.rendered is not None:
                return stored.rendered, True
            return replay(stored.rows), True
        raise KeyReused  # taken again by another request in between, twice: not this one

    async def _purge_when_due(self) -> None:
        """Remove a batch of expired keys (every user's), when this process's turn is due."""
        schedule = self._database.purge
        now = time.monotonic()
        if now < schedule.due:
            return
        schedule.due = now + PURGE_INTERVAL_SECONDS
        [(removed,)] = await self.all(PURGE, {"batch": PURGE_BATCH})
        if removed >= PURGE_BATCH:
            schedule.due = now  # more are waiting: the next request with a key purges too


# Statements cancelled at their deadline finish (or are closed) in the background; kept here so
# they are not garbage-collected half way.
_abandoned: set["asyncio.Task[Any]"] = set()


def _forget(task: "asyncio.Task[Any]") -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not report it as lost


async def _before(deadline: float, work: Coroutine[Any, Any, T]) -> T:
    """The result of `work`, or DeadlineExceeded as soon as `deadline` passes.

    `work` runs as a task of its own: on a timeout it is cancelled but not awaited, because
    psycopg answers a cancellation by cancelling the statement on the server and then waiting
    (up to seconds, against a frozen server) before it gives the connection back. The request
    must not wait for that.
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
