"""The raw-driver reference for docs/PERFORMANCE.md: the benchmarked endpoints written straight
on psycopg 3's async pool, with the service's own authentication, cursors, validation, JSON
shapes, middleware and logs, and the same SQL and driver settings (no server-side prepared
statements). Not a second implementation: `bench/run.py --psycopg3` measures it beside the
service in one run, so the service's ORM and framework cost shows as a ratio."""

import logging.config
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import make_url

from service.auth import CurrentUser, TokenVerifier, authenticate
from service.config import Settings
from service.db import Database
from service.errors import (
    EXCEPTION_HANDLERS,
    AnswerUnhandledErrors,
    TaskLimitReached,
    TaskNotFound,
)
from service.metrics import Metrics
from service.middleware import RequestContext, logging_config
from service.models import TASK_COLUMNS, TaskCreate, public_task
from service.pagination import CursorCodec
from service.responses import json_response
from service.routes.health import Readiness
from service.state import State
from service.validation import ListQueryDep, json_body, read_body

COLUMNS = ", ".join(TASK_COLUMNS)  # the order public_task reads
SET_OWNER = "SELECT set_config('tasks_api.user_id', %s, true)"
settings = Settings()
url = make_url(os.environ["DATABASE_URL"]).set(drivername="postgresql")
pool = AsyncConnectionPool(
    url.render_as_string(hide_password=False),
    min_size=settings.db_pool_size,
    max_size=settings.db_pool_size,
    open=False,
    kwargs={
        "autocommit": True,
        "row_factory": namedtuple_row,
        "prepare_threshold": settings.db_prepare_threshold,
    },
)
# The service's State, for its authentication dependency; its engine is never used here (it
# opens no connection until asked).
state = State(
    settings=settings,
    database=Database.from_settings(settings),
    verifier=TokenVerifier(settings),
    cursors=CursorCodec(settings.cursor_key()),
    readiness=Readiness(),
    metrics=Metrics.off(),
)
TASKS_PER_USER_MAX = settings.tasks_per_user_max


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, State]]:
    await pool.open()
    yield {"app": state}
    await pool.close()


# The same per-request work as the service: request ids, security headers, JSON access logs.
logging.config.dictConfig(logging_config(os.environ.get("BENCH_LOG_LEVEL", "info")))
app = FastAPI(lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)
app.add_middleware(AnswerUnhandledErrors)
app.add_middleware(RequestContext)
CreateBody = Annotated[TaskCreate, Depends(json_body(TaskCreate))]
guarded = [Depends(read_body), Depends(authenticate)]


@app.get("/healthz")
async def health() -> Any:
    return json_response({"status": "ok"})


@app.get("/api/tasks", dependencies=guarded)
async def list_tasks(user: CurrentUser, query: ListQueryDep) -> Any:
    cursors = state.cursors
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
        next_cursor = cursors.encode(user.user_id, page[-1].created_at, page[-1].id)
    return json_response({"tasks": [public_task(row) for row in page], "next_cursor": next_cursor})


@app.get("/api/tasks/{id}", dependencies=guarded)
async def get_task(id: str, user: CurrentUser) -> Any:
    sql = f"SELECT {COLUMNS} FROM tasks WHERE id = %s AND user_id = %s"
    row = first(await as_owner(user.user_id, sql, [_uuid(id), user.user_id]))
    if row is None:
        raise TaskNotFound
    return json_response(public_task(row))


@app.patch("/api/tasks/{id}/complete", dependencies=guarded)
async def toggle(id: str, user: CurrentUser) -> Any:
    sql = (
        "UPDATE tasks SET completed = NOT completed, updated_at = greatest(clock_timestamp(), "
        "tasks.updated_at + interval '1 microsecond') WHERE id = %s AND user_id = %s "
        "RETURNING completed"
    )
    row = first(await as_owner(user.user_id, sql, [_uuid(id), user.user_id]))
    if row is None:
        raise TaskNotFound
    return json_response({"success": True, "completed": row.completed})


@app.post("/api/tasks", dependencies=guarded, status_code=201)
async def create(user: CurrentUser, body: CreateBody) -> Any:
    # The per-user limit, as the service checks it: the user's row locked by the upsert.
    sql = (
        "WITH slot AS (INSERT INTO users (id) VALUES (%s) ON CONFLICT (id) DO UPDATE "
        "SET task_count = users.task_count WHERE users.task_count < %s RETURNING id) "
        "INSERT INTO tasks (id, user_id, title, created_at, updated_at) "
        "SELECT %s, slot.id, %s, statement_timestamp(), statement_timestamp() FROM slot "
        f"RETURNING {COLUMNS}"
    )
    params = [user.user_id, TASKS_PER_USER_MAX, uuid.uuid4(), body.title]
    row = first(await as_owner(user.user_id, sql, params))
    if row is None:
        raise TaskLimitReached(f"You have {TASKS_PER_USER_MAX} tasks, the most one user can have.")
    return json_response(
        public_task(row), status_code=201, headers={"Location": f"/api/tasks/{row.id}"}
    )


async def as_owner(user_id: uuid.UUID, sql: str, params: list[Any]) -> list[Any]:
    """The statement with the row-level security user set in the same transaction, pipelined
    into one round trip: what the service does, written on the driver directly."""
    async with pool.connection() as connection:
        async with connection.pipeline():
            await connection.execute(SET_OWNER, (str(user_id),))
            cursor = await connection.execute(sql, params)
        return await cursor.fetchall()


def first(rows: list[Any]) -> Any:
    return rows[0] if rows else None


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise TaskNotFound from None
