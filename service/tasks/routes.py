"""The task endpoints, mounted under the `/api` router, whose guard has already checked the
body's size, the token and the query's names before any of these runs (service.http.api).

Each handler runs one statement as the calling user (row-level security binds it to that
user's rows) and never takes a thread; the connection is back in the pool before the
response is built. Safe retries and concurrent edits, by HTTP's own means:

- every response that carries one task has its strong ETag (service.http.preconditions);
- PUT, PATCH, DELETE and the toggle honour If-Match within their one statement (412 when
  the task changed; a missing or foreign task is a 404 whatever the precondition says);
- GET of a task or a page honours If-None-Match (304);
- POST and the toggle, the two writes that are not idempotent, honour Idempotency-Key
  (service.http.idempotency): a retry gets the first answer again and changes nothing.
"""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from service.auth.tokens import Principal
from service.data.idempotency import Outcome, Row
from service.http.api import API_PREFIX, Caller, CallerDep, json_body
from service.http.idempotency import (
    answer_once,
    claim_for,
    idempotency_key,
    outcome_response,
)
from service.http.preconditions import (
    EntityTags,
    entity_tags,
    page_tag,
    version_tag,
    write_preconditions,
)
from service.http.problems import PreconditionFailed
from service.http.responses import json_body_bytes, json_response
from service.tasks.errors import TaskLimitReached, TaskNotFound
from service.tasks.listing import ListQueryDep
from service.tasks.schemas import TaskCreate, TaskReplace, TaskUpdate, public_task
from service.tasks.statements import statements
from service.uuids import CANONICAL_UUID

router = APIRouter(prefix=f"{API_PREFIX}/tasks", tags=["tasks"])

CreateBody = Annotated[TaskCreate, Depends(json_body(TaskCreate))]
ReplaceBody = Annotated[TaskReplace, Depends(json_body(TaskReplace))]
UpdateBody = Annotated[TaskUpdate, Depends(json_body(TaskUpdate))]
_UPDATED_AT = 5  # the position of updated_at in a whole tasks row (TASK_COLUMNS)
_NOT_MODIFIED = 304


def _address(user: Principal, task_id: str) -> dict[str, Any]:
    """The parameters that address one task: its id and its owner, always together. Only the
    canonical 8-4-4-4-12 form (any case) names a task; any other id cannot exist, and is
    answered exactly like one that does not."""
    if not CANONICAL_UUID.fullmatch(task_id):
        raise TaskNotFound
    return {"task_id": uuid.UUID(task_id), "owner": user.user_id}


def _not_modified(etag: str) -> Response:
    return Response(status_code=_NOT_MODIFIED, headers={"ETag": etag})


def _task_response(row: Row, status_code: int = 200) -> Response:
    """One task and its ETag."""
    headers = {"ETag": version_tag(row[_UPDATED_AT])}
    return json_response(public_task(row), status_code=status_code, headers=headers)


@router.get("", operation_id="listTasks")
async def list_tasks(request: Request, caller: CallerDep, query: ListQueryDep) -> Response:
    """List the user's tasks, oldest first."""
    if_none_match = entity_tags(request.headers, "If-None-Match")
    user, cursors = caller.user, caller.app.cursors
    parameters: dict[str, Any] = {"owner": user.user_id, "limit": query.limit + 1}
    position = b""
    if query.completed is not None:
        parameters["completed"] = query.completed
    if query.cursor is not None:
        after_created_at, after_id = cursors.decode(user.user_id, query.cursor)
        parameters |= {"after_created_at": after_created_at, "after_id": after_id}
        position = after_id.bytes + after_created_at.isoformat().encode()
    statement = statements.list(
        filtered=query.completed is not None, after=query.cursor is not None
    )
    rows = await caller.db.all(statement, parameters)
    page = rows[: query.limit]
    more = len(rows) > query.limit
    tasks = json_body_bytes([public_task(row) for row in page])
    # The page as queried: the query, and its tasks as sent (each one's id and version
    # among them). Hashing the bytes already built costs less than walking the rows again.
    etag = page_tag(f"{query.limit}|{query.completed}|{more}|".encode() + position + tasks)
    if if_none_match is not None and if_none_match.matches_weakly(etag):
        return _not_modified(etag)
    next_cursor = None
    if more:
        task_id, _, _, _, created_at, _ = page[-1]  # the row's columns, in TASK_COLUMNS order
        next_cursor = cursors.encode(user.user_id, created_at, task_id)
    body = b'{"tasks":' + tasks + b',"next_cursor":' + json_body_bytes(next_cursor) + b"}"
    return Response(body, headers={"ETag": etag}, media_type="application/json")


@router.post("", operation_id="createTask", status_code=201)
async def create_task(request: Request, caller: CallerDep, body: CreateBody) -> Response:
    """Create a task."""
    key = idempotency_key(request.headers)
    limit = caller.app.settings.tasks_per_user_max
    parameters = {
        "new_id": uuid.uuid4(),
        "owner": caller.user.user_id,
        "new_title": body.title,
        "max_tasks": limit,
    }

    def created(rows: list[Row]) -> Outcome:
        if not rows:
            raise TaskLimitReached(
                f"You have {limit} tasks, the most one user can have; delete some to create more."
            )
        task = public_task(rows[0])
        return Outcome(
            status=201,
            body=json_body_bytes(task),
            location=f"{API_PREFIX}/tasks/{task['id']}",
            etag=version_tag(rows[0][_UPDATED_AT]),
        )

    def counted(rows: list[Row]) -> Outcome:
        outcome = created(rows)
        caller.app.metrics.created("tasks")  # a replay created nothing
        return outcome

    if key is None:
        return outcome_response(counted(await caller.db.all(statements.create, parameters)))
    ttl = caller.app.settings.idempotency_key_ttl_seconds
    claim = claim_for(key, ttl, method="POST", route=router.prefix, item="", body=body.model_dump())
    return await answer_once(
        caller.db, claim, statements.create_once, parameters, respond=counted, replay=created
    )


@router.get("/{id}", operation_id="getTask")
async def get_task(id: str, request: Request, caller: CallerDep) -> Response:
    """Read one task."""
    if_none_match = entity_tags(request.headers, "If-None-Match")
    row = await caller.db.first(statements.get, _address(caller.user, id))
    if row is None:
        raise TaskNotFound
    etag = version_tag(row[_UPDATED_AT])
    if if_none_match is not None and if_none_match.matches_weakly(etag):
        return _not_modified(etag)
    return _task_response(row)


def _write(
    if_match: EntityTags | None, statement: str, conditional: str, params: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The statement a write runs: unconditional without If-Match (or with `*`, which any
    existing task matches); with one, the conditional form, given the versions it names."""
    if if_match is None or if_match.any:
        return statement, params
    return conditional, {**params, "versions": if_match.versions()}


def _written(rows: list[Row], if_match: EntityTags | None) -> Row:
    """The written row. 404 when the task is missing or another user's, whatever the
    precondition says (RFC 9110 section 13.2.1); 412 when it exists at another version."""
    if if_match is None or if_match.any:
        if not rows:
            raise TaskNotFound
        return rows[0]
    found, *written = rows[0]  # the conditional form always answers one row
    if not found:
        raise TaskNotFound
    if written[0] is None:
        raise PreconditionFailed
    return tuple(written)


def _if_match(caller: Caller, request: Request) -> EntityTags | None:
    return write_preconditions(request.headers, required=caller.app.settings.require_if_match)


async def _update(
    caller: Caller, request: Request, task_id: str, values: dict[str, Any]
) -> Response:
    if_match = _if_match(caller, request)
    fields = frozenset(values)
    new_values = {f"new_{field}": value for field, value in values.items()}
    params = {**new_values, **_address(caller.user, task_id)}
    write = _write(
        if_match, statements.update(fields), statements.update(fields, conditional=True), params
    )
    return _task_response(_written(await caller.db.all(*write), if_match))


@router.put("/{id}", operation_id="replaceTask")
async def replace_task(id: str, request: Request, caller: CallerDep, body: ReplaceBody) -> Response:
    """Replace a task's title and completion state."""
    return await _update(caller, request, id, {"title": body.title, "completed": body.completed})


@router.patch("/{id}", operation_id="updateTask")
async def update_task(id: str, request: Request, caller: CallerDep, body: UpdateBody) -> Response:
    """Change some of a task's fields."""
    return await _update(caller, request, id, body.model_dump(exclude_unset=True))


@router.patch("/{id}/complete", operation_id="toggleTaskCompletion")
async def toggle_task_completion(id: str, request: Request, caller: CallerDep) -> Response:
    """Flip a task's completion state in one atomic statement."""
    if_match = _if_match(caller, request)
    key = idempotency_key(request.headers)
    address = _address(caller.user, id)
    write = _write(if_match, statements.toggle, statements.toggle_if, address)

    def toggled(row: Row) -> Outcome:
        completed, updated_at = row
        return Outcome(
            status=200,
            body=json_body_bytes({"success": True, "completed": completed}),
            etag=version_tag(updated_at),
        )

    def answered(rows: list[Row]) -> Outcome:
        return toggled(_written(rows, if_match))

    if key is None:
        return outcome_response(answered(await caller.db.all(*write)))
    route = f"{router.prefix}/{{id}}/complete"
    ttl = caller.app.settings.idempotency_key_ttl_seconds
    claim = claim_for(
        key, ttl, method="PATCH", route=route, item=str(address["task_id"]), body=None
    )
    sql, parameters = write
    once = statements.toggle_once if sql == statements.toggle else statements.toggle_if_once
    # A replay answers what the first toggle did, from the row it wrote: no precondition again.
    return await answer_once(
        caller.db,
        claim,
        once,
        parameters,
        respond=answered,
        replay=lambda rows: toggled(rows[0]),
    )


@router.delete("/{id}", operation_id="deleteTask")
async def delete_task(id: str, request: Request, caller: CallerDep) -> Response:
    """Delete a task."""
    if_match = _if_match(caller, request)
    address = _address(caller.user, id)
    write = _write(if_match, statements.delete, statements.delete_if, address)
    _written(await caller.db.all(*write), if_match)
    return json_response({"success": True})
