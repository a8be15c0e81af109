"""The task endpoints. Every statement is scoped to the caller: see `_owned`.

Every handler is `async` and runs one statement through `DatabaseDep`, so no request takes a
thread, and the connection goes back to the pool before the response is built.
"""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy import (
    ColumnElement,
    delete,
    func,
    literal_column,
    not_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from starlette.responses import Response

from service.auth import CurrentUser, Principal, authenticate
from service.db import DatabaseDep
from service.errors import TaskNotFound
from service.models import (
    TaskCreate,
    TaskReplace,
    TaskUpdate,
    public_task,
    tasks_table,
    users_table,
)
from service.responses import json_response
from service.state import StateDep
from service.validation import ListQueryDep, NoQuery, json_body, read_body

# Reading the (bounded) body comes first so that 413 precedes 401; authentication comes
# before every other check and every handler, so no task route can be left open.
router = APIRouter(
    prefix="/api/tasks",
    tags=["tasks"],
    dependencies=[Depends(read_body), Depends(authenticate)],
)

tasks = tasks_table.c

CreateBody = Annotated[TaskCreate, Depends(json_body(TaskCreate))]
ReplaceBody = Annotated[TaskReplace, Depends(json_body(TaskReplace))]
UpdateBody = Annotated[TaskUpdate, Depends(json_body(TaskUpdate))]


def _owned(user: Principal, task_id: str) -> ColumnElement[bool]:
    """The one way to address a task: by id *and* owner, so a foreign task is a missing one.

    An id that is not a UUID cannot exist, and is answered exactly like one that does not.
    """
    try:
        parsed = uuid.UUID(task_id)
    except ValueError:
        raise TaskNotFound from None
    return (tasks.id == parsed) & (tasks.user_id == user.user_id)


def _bumped_updated_at() -> ColumnElement[Any]:
    # Strictly increasing even for two changes within one clock tick.
    return literal_column(
        "greatest(clock_timestamp(), tasks.updated_at + interval '1 microsecond')"
    )


@router.get("", operation_id="listTasks")
async def list_tasks(
    state: StateDep, db: DatabaseDep, user: CurrentUser, query: ListQueryDep
) -> Response:
    """List the user's tasks, oldest first."""
    statement = select(tasks_table).where(tasks.user_id == user.user_id)
    if query.completed is not None:
        statement = statement.where(tasks.completed == query.completed)
    if query.cursor is not None:
        after = state.cursors.decode(user.user_id, query.cursor)
        statement = statement.where(tuple_(tasks.created_at, tasks.id) > tuple_(*after))
    order = (tasks.created_at, tasks.id)
    rows = await db.all(statement.order_by(*order).limit(query.limit + 1))
    page = rows[: query.limit]
    next_cursor = None
    if len(rows) > query.limit:
        last = page[-1]
        next_cursor = state.cursors.encode(user.user_id, last.created_at, last.id)
    return json_response({"tasks": [public_task(row) for row in page], "next_cursor": next_cursor})


@router.post("", operation_id="createTask", status_code=201, dependencies=[NoQuery])
async def create_task(db: DatabaseDep, user: CurrentUser, body: CreateBody) -> Response:
    """Create a task."""
    # The user row is created in the same statement as the first task, so tasks.user_id is
    # a real foreign key without a user lookup on every request.
    ensure_user = insert(users_table).values(id=user.user_id).on_conflict_do_nothing()
    statement = (
        insert(tasks_table)
        .values(
            id=uuid.uuid4(),
            user_id=user.user_id,
            title=body.title,
            # One value for both: separate defaults would read the clock twice.
            created_at=func.statement_timestamp(),
            updated_at=func.statement_timestamp(),
        )
        .returning(*tasks_table.c)
        .add_cte(ensure_user.cte("ensure_user"))
    )
    row = await db.one_or_none(statement)
    assert row is not None  # noqa: S101 - INSERT … RETURNING returns the row it inserted
    return json_response(
        public_task(row), status_code=201, headers={"Location": f"/api/tasks/{row.id}"}
    )


@router.get("/{id}", operation_id="getTask", dependencies=[NoQuery])
async def get_task(id: str, db: DatabaseDep, user: CurrentUser) -> Response:
    """Read one task."""
    row = await db.one_or_none(select(tasks_table).where(_owned(user, id)))
    if row is None:
        raise TaskNotFound
    return json_response(public_task(row))


async def _update(
    db: DatabaseDep, user: Principal, task_id: str, values: dict[str, Any]
) -> Response:
    statement = (
        update(tasks_table)
        .where(_owned(user, task_id))
        .values(**values, updated_at=_bumped_updated_at())
        .returning(*tasks_table.c)
    )
    row = await db.one_or_none(statement)
    if row is None:
        raise TaskNotFound
    return json_response(public_task(row))


@router.put("/{id}", operation_id="replaceTask", dependencies=[NoQuery])
async def replace_task(id: str, db: DatabaseDep, user: CurrentUser, body: ReplaceBody) -> Response:
    """Replace a task's title and completion state."""
    return await _update(db, user, id, {"title": body.title, "completed": body.completed})


@router.patch("/{id}", operation_id="updateTask", dependencies=[NoQuery])
async def update_task(id: str, db: DatabaseDep, user: CurrentUser, body: UpdateBody) -> Response:
    """Change some of a task's fields."""
    return await _update(db, user, id, body.model_dump(exclude_unset=True))


@router.patch("/{id}/complete", operation_id="toggleTaskCompletion", dependencies=[NoQuery])
async def toggle_task_completion(id: str, db: DatabaseDep, user: CurrentUser) -> Response:
    """Flip a task's completion state in one atomic statement."""
    statement = (
        update(tasks_table)
        .where(_owned(user, id))
        .values(completed=not_(tasks.completed), updated_at=_bumped_updated_at())
        .returning(tasks.completed)
    )
    row = await db.one_or_none(statement)
    if row is None:
        raise TaskNotFound
    return json_response({"success": True, "completed": row.completed})


@router.delete("/{id}", operation_id="deleteTask", dependencies=[NoQuery])
async def delete_task(id: str, db: DatabaseDep, user: CurrentUser) -> Response:
    """Delete a task."""
    row = await db.one_or_none(delete(tasks_table).where(_owned(user, id)).returning(tasks.id))
    if row is None:
        raise TaskNotFound
    return json_response({"success": True})
