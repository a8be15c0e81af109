"""The task endpoints. Every statement is scoped to the caller: see `_owned`."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
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

from service.auth import CurrentUser, Principal, authenticate
from service.db import SessionDep
from service.errors import TaskNotFound
from service.models import (
    TaskCreate,
    TaskReplace,
    TaskUpdate,
    public_task,
    tasks_table,
    users_table,
)
from service.pagination import CursorCodec
from service.responses import json_response
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


def _cursors(request: Request) -> CursorCodec:
    codec: CursorCodec = request.app.state.cursors
    return codec


@router.get("", operation_id="listTasks")
def list_tasks(
    request: Request, session: SessionDep, user: CurrentUser, query: ListQueryDep
) -> Any:
    """List the user's tasks, oldest first."""
    cursors = _cursors(request)
    statement = select(tasks_table).where(tasks.user_id == user.user_id)
    if query.completed is not None:
        statement = statement.where(tasks.completed == query.completed)
    if query.cursor is not None:
        after = cursors.decode(user.user_id, query.cursor)
        statement = statement.where(tuple_(tasks.created_at, tasks.id) > tuple_(*after))
    order = (tasks.created_at, tasks.id)
    rows = session.execute(statement.order_by(*order).limit(query.limit + 1)).all()
    page = rows[: query.limit]
    next_cursor = None
    if len(rows) > query.limit:
        last = page[-1]
        next_cursor = cursors.encode(user.user_id, last.created_at, last.id)
    return json_response({"tasks": [public_task(row) for row in page], "next_cursor": next_cursor})


@router.post("", operation_id="createTask", status_code=201, dependencies=[NoQuery])
def create_task(session: SessionDep, user: CurrentUser, body: CreateBody) -> Any:
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
    row = session.execute(statement).one()
    return json_response(
        public_task(row), status_code=201, headers={"Location": f"/api/tasks/{row.id}"}
    )


@router.get("/{id}", operation_id="getTask", dependencies=[NoQuery])
def get_task(id: str, session: SessionDep, user: CurrentUser) -> Any:
    """Read one task."""
    row = session.execute(select(tasks_table).where(_owned(user, id))).one_or_none()
    if row is None:
        raise TaskNotFound
    return json_response(public_task(row))


def _update(session: SessionDep, user: Principal, task_id: str, values: dict[str, Any]) -> Any:
    statement = (
        update(tasks_table)
        .where(_owned(user, task_id))
        .values(**values, updated_at=_bumped_updated_at())
        .returning(*tasks_table.c)
    )
    row = session.execute(statement).one_or_none()
    if row is None:
        raise TaskNotFound
    return json_response(public_task(row))


@router.put("/{id}", operation_id="replaceTask", dependencies=[NoQuery])
def replace_task(id: str, session: SessionDep, user: CurrentUser, body: ReplaceBody) -> Any:
    """Replace a task's title and completion state."""
    return _update(session, user, id, {"title": body.title, "completed": body.completed})


@router.patch("/{id}", operation_id="updateTask", dependencies=[NoQuery])
def update_task(id: str, session: SessionDep, user: CurrentUser, body: UpdateBody) -> Any:
    """Change some of a task's fields."""
    return _update(session, user, id, body.model_dump(exclude_unset=True))


@router.patch("/{id}/complete", operation_id="toggleTaskCompletion", dependencies=[NoQuery])
def toggle_task_completion(id: str, session: SessionDep, user: CurrentUser) -> Any:
    """Flip a task's completion state in one atomic statement."""
    statement = (
        update(tasks_table)
        .where(_owned(user, id))
        .values(completed=not_(tasks.completed), updated_at=_bumped_updated_at())
        .returning(tasks.completed)
    )
    completed = session.execute(statement).scalar_one_or_none()
    if completed is None:
        raise TaskNotFound
    return json_response({"success": True, "completed": completed})


@router.delete("/{id}", operation_id="deleteTask", dependencies=[NoQuery])
def delete_task(id: str, session: SessionDep, user: CurrentUser) -> Any:
    """Delete a task."""
    deleted = session.execute(
        delete(tasks_table).where(_owned(user, id)).returning(tasks.id)
    ).scalar_one_or_none()
    if deleted is None:
        raise TaskNotFound
    return json_response({"success": True})
