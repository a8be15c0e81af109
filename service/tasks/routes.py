"""The task endpoints, mounted under the `/api` router, whose guard has already checked the
body's size, the token and the query's names before any of these runs (service.http.api).

Each handler runs one statement as the calling user (row-level security binds it to that
user's rows) and never takes a thread; the connection is back in the pool before the
response is built.
"""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.responses import Response

from service.auth.tokens import Principal
from service.http.api import API_PREFIX, CallerDep, json_body
from service.http.responses import json_response
from service.tasks.errors import TaskLimitReached, TaskNotFound
from service.tasks.listing import ListQueryDep
from service.tasks.schemas import TaskCreate, TaskReplace, TaskUpdate, public_task
from service.tasks.statements import statements
from service.uuids import CANONICAL_UUID

router = APIRouter(prefix=f"{API_PREFIX}/tasks", tags=["tasks"])

CreateBody = Annotated[TaskCreate, Depends(json_body(TaskCreate))]
ReplaceBody = Annotated[TaskReplace, Depends(json_body(TaskReplace))]
UpdateBody = Annotated[TaskUpdate, Depends(json_body(TaskUpdate))]


def _address(user: Principal, task_id: str) -> dict[str, Any]:
    """The parameters that address one task: its id and its owner, always together. Only the
    canonical 8-4-4-4-12 form (any case) names a task; any other id cannot exist, and is
    answered exactly like one that does not."""
    if not CANONICAL_UUID.fullmatch(task_id):
        raise TaskNotFound
    return {"task_id": uuid.UUID(task_id), "owner": user.user_id}


@router.get("", operation_id="listTasks")
async def list_tasks(caller: CallerDep, query: ListQueryDep) -> Response:
    """List the user's tasks, oldest first."""
    user, cursors = caller.user, caller.app.cursors
    parameters: dict[str, Any] = {"owner": user.user_id, "limit": query.limit + 1}
    if query.completed is not None:
        parameters["completed"] = query.completed
    if query.cursor is not None:
        after_created_at, after_id = cursors.decode(user.user_id, query.cursor)
        parameters |= {"after_created_at": after_created_at, "after_id": after_id}
    statement = statements.list(
        filtered=query.completed is not None, after=query.cursor is not None
    )
    rows = await caller.db.all(statement, parameters)
    page = rows[: query.limit]
    next_cursor = None
    if len(rows) > query.limit:
        task_id, _, _, _, created_at, _ = page[-1]  # the row's columns, in TASK_COLUMNS order
        next_cursor = cursors.encode(user.user_id, created_at, task_id)
    return json_response({"tasks": [public_task(row) for row in page], "next_cursor": next_cursor})


@router.post("", operation_id="createTask", status_code=201)
async def create_task(caller: CallerDep, body: CreateBody) -> Response:
    """Create a task."""
    limit = caller.app.settings.tasks_per_user_max
    parameters = {
        "new_id": uuid.uuid4(),
        "owner": caller.user.user_id,
        "new_title": body.title,
        "max_tasks": limit,
    }
    row = await caller.db.first(statements.create, parameters)
    if row is None:
        raise TaskLimitReached(
            f"You have {limit} tasks, the most one user can have; delete some to create more."
        )
    caller.app.metrics.created("tasks")
    task = public_task(row)
    return json_response(task, status_code=201, headers={"Location": f"/api/tasks/{task['id']}"})


@router.get("/{id}", operation_id="getTask")
async def get_task(id: str, caller: CallerDep) -> Response:
    """Read one task."""
    row = await caller.db.first(statements.get, _address(caller.user, id))
    if row is None:
        raise TaskNotFound
    return json_response(public_task(row))


async def _update(caller: CallerDep, task_id: str, values: dict[str, Any]) -> Response:
    statement = statements.update(frozenset(values))
    new_values = {f"new_{field}": value for field, value in values.items()}
    row = await caller.db.first(statement, {**new_values, **_address(caller.user, task_id)})
    if row is None:
        raise TaskNotFound
    return json_response(public_task(row))


@router.put("/{id}", operation_id="replaceTask")
async def replace_task(id: str, caller: CallerDep, body: ReplaceBody) -> Response:
    """Replace a task's title and completion state."""
    return await _update(caller, id, {"title": body.title, "completed": body.completed})


@router.patch("/{id}", operation_id="updateTask")
async def update_task(id: str, caller: CallerDep, body: UpdateBody) -> Response:
    """Change some of a task's fields."""
    return await _update(caller, id, body.model_dump(exclude_unset=True))


@router.patch("/{id}/complete", operation_id="toggleTaskCompletion")
async def toggle_task_completion(id: str, caller: CallerDep) -> Response:
    """Flip a task's completion state in one atomic statement."""
    row = await caller.db.first(statements.toggle, _address(caller.user, id))
    if row is None:
        raise TaskNotFound
    (completed,) = row
    return json_response({"success": True, "completed": completed})


@router.delete("/{id}", operation_id="deleteTask")
async def delete_task(id: str, caller: CallerDep) -> Response:
    """Delete a task."""
    if await caller.db.first(statements.delete, _address(caller.user, id)) is None:
        raise TaskNotFound
    return json_response({"success": True})
