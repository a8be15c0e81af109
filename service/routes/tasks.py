"""The task endpoints. Every statement is scoped to the caller: see `_owned`.

Every handler is `async` and runs one statement through `DatabaseDep`, so no request takes a
thread, and the connection goes back to the pool before the response is built.
"""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    bindparam,
    delete,
    func,
    literal_column,
    not_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql.dml import ReturningUpdate
from starlette.responses import Response

from service.auth import CANONICAL_UUID, CurrentUser, Principal, authenticate
from service.deps import DatabaseDep
from service.errors import TaskLimitReached, TaskNotFound
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


# Strictly increasing even for two changes within one clock tick.
_BUMPED_UPDATED_AT: ColumnElement[Any] = literal_column(
    "greatest(clock_timestamp(), tasks.updated_at + interval '1 microsecond')"
)


class Statements:
    """Every statement the task routes run, built once with bound parameters and reused:
    building a SQLAlchemy statement and its cache key costs more than the round trip it makes.

    Bound parameters are named apart from the columns, whose names SQLAlchemy reserves for
    VALUES and SET. `owner_filter=False` is a test-only hook: it drops `user_id = :owner`
    from every WHERE clause, to show that row-level security alone still keeps users apart
    (tests/security/test_second_wall.py). The service never builds it.
    """

    def __init__(self, *, owner_filter: bool = True) -> None:
        self._mine: ColumnElement[bool] = (
            tasks.user_id == bindparam("owner") if owner_filter else true()
        )
        # The one way to address a task: by id *and* owner, so a foreign task is a missing one.
        self._owned = (tasks.id == bindparam("task_id")) & self._mine
        self.get = select(tasks_table).where(self._owned)
        self.toggle = (
            update(tasks_table)
            .where(self._owned)
            .values(completed=not_(tasks.completed), updated_at=_BUMPED_UPDATED_AT)
            .returning(tasks.completed)
        )
        self.delete = delete(tasks_table).where(self._owned).returning(tasks.id)
        # One statement, one round trip: lock the user's row (creating it with the first
        # task, so tasks.user_id is a real foreign key without a lookup per request) and
        # insert only while the user's task_count, kept by triggers on `tasks`, is below the
        # limit. ON CONFLICT DO UPDATE waits for a concurrent create of the same user and
        # then re-checks its WHERE against the committed count, so concurrent creates
        # cannot overshoot; when the WHERE fails, `slot` is empty and nothing is inserted.
        users = users_table.c
        slot = (
            insert(users_table)
            .values(id=bindparam("owner"))
            .on_conflict_do_update(
                index_elements=[users.id],
                set_={"task_count": users.task_count},
                where=users.task_count < bindparam("max_tasks", type_=Integer()),
            )
            .returning(users.id)
            .cte("slot")
        )
        now = func.statement_timestamp()  # one value for both: two defaults read two clocks
        self.create = (
            insert(tasks_table)
            .from_select(
                ["id", "user_id", "title", "created_at", "updated_at"],
                select(
                    bindparam("new_id", type_=tasks.id.type),
                    slot.c.id,
                    bindparam("new_title", type_=tasks.title.type),
                    now,
                    now,
                ),
            )
            .returning(*tasks_table.c)
        )
        self._lists: dict[tuple[bool, bool], Select[Any]] = {}
        self._updates: dict[frozenset[str], ReturningUpdate[Any]] = {}

    def list(self, *, filtered: bool, after: bool) -> Select[Any]:
        key = (filtered, after)
        if key not in self._lists:
            statement = select(tasks_table).where(self._mine)
            if filtered:
                statement = statement.where(tasks.completed == bindparam("completed"))
            if after:
                after_created_at = bindparam("after_created_at", type_=tasks.created_at.type)
                after_id = bindparam("after_id", type_=tasks.id.type)
                position = tuple_(tasks.created_at, tasks.id)
                statement = statement.where(position > tuple_(after_created_at, after_id))
            order = (tasks.created_at, tasks.id)
            limit = bindparam("limit", type_=Integer())
            self._lists[key] = statement.order_by(*order).limit(limit)
        return self._lists[key]

    def update(self, fields: frozenset[str]) -> ReturningUpdate[Any]:
        if fields not in self._updates:
            values: dict[str, Any] = {field: bindparam(f"new_{field}") for field in fields}
            self._updates[fields] = (
                update(tasks_table)
                .where(self._owned)
                .values(**values, updated_at=_BUMPED_UPDATED_AT)
                .returning(*tasks_table.c)
            )
        return self._updates[fields]


statements = Statements()


def _address(user: Principal, task_id: str) -> dict[str, Any]:
    """The parameters of `_owned`. Only the canonical 8-4-4-4-12 form (any case) names a
    task: `urn:uuid:`, braces or bare hex would be a second name for one resource, which a
    cache or an authorisation rule keyed on the path would not know. Any other id cannot
    exist, and is answered exactly like one that does not."""
    if not CANONICAL_UUID.fullmatch(task_id):
        raise TaskNotFound
    return {"task_id": uuid.UUID(task_id), "owner": user.user_id}


@router.get("", operation_id="listTasks")
async def list_tasks(
    state: StateDep, db: DatabaseDep, user: CurrentUser, query: ListQueryDep
) -> Response:
    """List the user's tasks, oldest first."""
    parameters: dict[str, Any] = {"owner": user.user_id, "limit": query.limit + 1}
    if query.completed is not None:
        parameters["completed"] = query.completed
    if query.cursor is not None:
        after_created_at, after_id = state.cursors.decode(user.user_id, query.cursor)
        parameters |= {"after_created_at": after_created_at, "after_id": after_id}
    statement = statements.list(
        filtered=query.completed is not None, after=query.cursor is not None
    )
    rows = await db.all(statement, parameters)
    page = rows[: query.limit]
    next_cursor = None
    if len(rows) > query.limit:
        last = page[-1]
        next_cursor = state.cursors.encode(user.user_id, last.created_at, last.id)
    return json_response({"tasks": [public_task(row) for row in page], "next_cursor": next_cursor})


@router.post("", operation_id="createTask", status_code=201, dependencies=[NoQuery])
async def create_task(
    state: StateDep, db: DatabaseDep, user: CurrentUser, body: CreateBody
) -> Response:
    """Create a task."""
    limit = state.settings.tasks_per_user_max
    parameters = {
        "new_id": uuid.uuid4(),
        "owner": user.user_id,
        "new_title": body.title,
        "max_tasks": limit,
    }
    row = await db.one_or_none(statements.create, parameters)
    if row is None:
        raise TaskLimitReached(
            f"You have {limit} tasks, the most one user can have; delete some to create more."
        )
    state.metrics.task_created()
    return json_response(
        public_task(row), status_code=201, headers={"Location": f"/api/tasks/{row.id}"}
    )


@router.get("/{id}", operation_id="getTask", dependencies=[NoQuery])
async def get_task(id: str, db: DatabaseDep, user: CurrentUser) -> Response:
    """Read one task."""
    row = await db.one_or_none(statements.get, _address(user, id))
    if row is None:
        raise TaskNotFound
    return json_response(public_task(row))


async def _update(
    db: DatabaseDep, user: Principal, task_id: str, values: dict[str, Any]
) -> Response:
    statement = statements.update(frozenset(values))
    new_values = {f"new_{field}": value for field, value in values.items()}
    row = await db.one_or_none(statement, {**new_values, **_address(user, task_id)})
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
    row = await db.one_or_none(statements.toggle, _address(user, id))
    if row is None:
        raise TaskNotFound
    return json_response({"success": True, "completed": row.completed})


@router.delete("/{id}", operation_id="deleteTask", dependencies=[NoQuery])
async def delete_task(id: str, db: DatabaseDep, user: CurrentUser) -> Response:
    """Delete a task."""
    if await db.one_or_none(statements.delete, _address(user, id)) is None:
        raise TaskNotFound
    return json_response({"success": True})
