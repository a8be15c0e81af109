"""The raw-driver reference for docs/PERFORMANCE.md: the benchmarked endpoints written straight
on psycopg 3's async pool, behind the service's own `/api` guard (body bound, authentication,
query names), with its cursors, validation, JSON shapes, envelope and logs, and hand-written
SQL with the same driver settings (no server-side prepared statements). Not a second
implementation: `bench/run.py --psycopg3` measures it beside the service in one run, so what
the service adds to the driver shows as a ratio."""

import logging.config
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from psycopg_pool import AsyncConnectionPool

from service.auth.tokens import TokenVerifier
from service.config import Settings
from service.data.access import SET_ROW_OWNER, Database
from service.http.api import CallerDep, api_router, json_body
from service.http.contract import declared_query_parameters, load_contract, operations_with_a_body
from service.http.cursors import CursorCodec
from service.http.envelope import RequestEnvelope
from service.http.handlers import EXCEPTION_HANDLERS, AnswerUnhandledErrors
from service.http.logs import logging_config
from service.http.rate_limits import RateLimits
from service.http.responses import json_response
from service.http.state import State
from service.metrics import Metrics
from service.tasks.errors import TaskLimitReached, TaskNotFound
from service.tasks.listing import ListQueryDep
from service.tasks.schemas import TASK_COLUMNS, TaskCreate, public_task

COLUMNS = ", ".join(TASK_COLUMNS)  # the order public_task reads
settings = Settings()
pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
    settings.request_conninfo(),
    min_size=settings.db_pool_size,
    max_size=settings.db_pool_size,
    open=False,
    kwargs={"autocommit": True, "prepare_threshold": settings.db_prepare_threshold},
)
# The service's State, for its guard; its own pool is never opened here.
state = State(
    settings=settings,
    database=Database.from_settings(settings),
    verifier=TokenVerifier(settings),
    cursors=CursorCodec(settings.cursor_key()),
    metrics=Metrics.off(),
    query_parameters=declared_query_parameters(load_contract()),
    takes_body=operations_with_a_body(load_contract()),
    rate_limits=RateLimits(settings, Metrics.off()),
)
TASKS_PER_USER_MAX = settings.tasks_per_user_max


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    await pool.open()
    yield
    await pool.close()


# The same per-request work as the service: request ids, security headers, JSON access logs.
logging.config.dictConfig(logging_config(os.environ.get("BENCH_LOG_LEVEL", "info")))
app = FastAPI(lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)
app.add_middleware(AnswerUnhandledErrors)
app.add_middleware(RequestEnvelope, state=state)
api = api_router()
CreateBody = Annotated[TaskCreate, Depends(json_body(TaskCreate))]


@app.get("/healthz")
async def health() -> Any:
    return json_response({"status": "ok"})


@api.get("/api/tasks", operation_id="listTasks")
async def list_tasks(caller: CallerDep, query: ListQueryDep) -> Any:
    user, cursors = caller.user, caller.app.cursors
    sql = f"SELECT {COLUMNS} FROM tasks WHERE user_id = %s"
    params: list[Any] = [user.user_id]
    if query.completed is not None:
        sql += " AND completed = %s"
        params.append(query.completed)
    if query.cursor is not None:
        sql += " AND (created_at, id) > (%s, %s)"
        params.extend(cursors.decode(user.user_id, query.cursor))
    sql += " ORDER BY created_at, id LIMIT %s"
    params.append(query.limit + 1)
    rows = await as_owner(user.user_id, sql, params)
    page, next_cursor = rows[: query.limit], None
    if len(rows) > query.limit:
        next_cursor = cursors.encode(user.user_id, page[-1][4], page[-1][0])
    return json_response({"tasks": [public_task(row) for row in page], "next_cursor": next_cursor})


@api.get("/api/tasks/{id}", operation_id="getTask")
async def get_task(id: str, caller: CallerDep) -> Any:
    sql = f"SELECT {COLUMNS} FROM tasks WHERE id = %s AND user_id = %s"
    user_id = caller.user.user_id
    row = first(await as_owner(user_id, sql, [_uuid(id), user_id]))
    if row is None:
        raise TaskNotFound
    return json_response(public_task(row))


@api.patch("/api/tasks/{id}/complete", operation_id="toggleTaskCompletion")
async def toggle(id: str, caller: CallerDep) -> Any:
    sql = (
        "UPDATE tasks SET completed = NOT completed, updated_at = greatest(clock_timestamp(), "
        "tasks.updated_at + interval '1 microsecond') WHERE id = %s AND user_id = %s "
        "RETURNING completed"
    )
    user_id = caller.user.user_id
    row = first(await as_owner(user_id, sql, [_uuid(id), user_id]))
    if row is None:
        raise TaskNotFound
    return json_response({"success": True, "completed": row[0]})


@api.post("/api/tasks", operation_id="createTask", status_code=201)
async def create(caller: CallerDep, body: CreateBody) -> Any:
    # The per-user limit, as the service checks it: the user's row locked by the upsert.
    sql = (
        "WITH slot AS (INSERT INTO users (id) VALUES (%s) ON CONFLICT (id) DO UPDATE "
        "SET task_count = users.task_count WHERE users.task_count < %s RETURNING id) "
        "INSERT INTO tasks (id, user_id, title, created_at, updated_at) "
        "SELECT %s, slot.id, %s, statement_timestamp(), statement_timestamp() FROM slot "
        f"RETURNING {COLUMNS}"
    )
    user_id = caller.user.user_id
    params = [user_id, TASKS_PER_USER_MAX, uuid.uuid4(), body.title]
    row = first(await as_owner(user_id, sql, params))
    if row is None:
        raise TaskLimitReached(f"You have {TASKS_PER_USER_MAX} tasks, the most one user can have.")
    return json_response(
        public_task(row), status_code=201, headers={"Location": f"/api/tasks/{row[0]}"}
    )


app.include_router(api)


async def as_owner(user_id: uuid.UUID, sql: str, params: list[Any]) -> list[Any]:
    """The statement with the row-level security user set in the same transaction, pipelined
    into one round trip: what the service does, written on the driver directly."""
    async with pool.connection() as connection:
        async with connection.pipeline():
            await connection.execute(SET_ROW_OWNER, (str(user_id),))
            cursor = await connection.execute(sql, params)
        rows: list[Any] = await cursor.fetchall()
        return rows


def first(rows: list[Any]) -> Any:
    return rows[0] if rows else None


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise TaskNotFound from None
