"""The rules of a task listing: its page size, its cursor, and its completion filter.

Which parameter names exist at all is the contract's to say (the `/api` guard refuses any
other); what each one means is said here.
"""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.http.input import single_parameter
from service.http.problems import InvalidInput

LIMIT_DEFAULT, LIMIT_MAX = 50, 200
CURSOR_MAX_CHARS = 200
# What this module parses; tests/contract compares it with the contract's listTasks.
LIST_PARAMETERS = frozenset({"limit", "cursor", "completed"})


@dataclass(frozen=True, slots=True)
class ListQuery:
    limit: int
    cursor: str | None
    completed: bool | None


async def list_query(request: Request) -> ListQuery:
    """`limit`, `cursor` and `completed`, parsed strictly; every bad one named in one 400."""
    query = request.query_params
    errors: list[dict[str, str]] = []

    limit = LIMIT_DEFAULT
    raw_limit = single_parameter(query, "limit", errors)
    if raw_limit is not None:
        # Length first: int() refuses thousands of digits with an exception of its own.
        digits = (
            raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= len(str(LIMIT_MAX))
        )
        if digits and 1 <= int(raw_limit) <= LIMIT_MAX:
            limit = int(raw_limit)
        else:
            errors.append({"parameter": "limit", "detail": f"must be an integer 1-{LIMIT_MAX}"})

    cursor = single_parameter(query, "cursor", errors)
    if cursor is not None and not 1 <= len(cursor) <= CURSOR_MAX_CHARS:
        errors.append({"parameter": "cursor", "detail": "is not a cursor from this API"})

    completed: bool | None = None
    raw_completed = single_parameter(query, "completed", errors)
    if raw_completed is not None:
        if raw_completed in ("true", "false"):
            completed = raw_completed == "true"
        else:
            errors.append({"parameter": "completed", "detail": "must be true or false"})

    if errors:
        raise InvalidInput(errors=errors)
    return ListQuery(limit=limit, cursor=cursor, completed=completed)


ListQueryDep = Annotated[ListQuery, Depends(list_query)]
