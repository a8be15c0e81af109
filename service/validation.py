"""Reading request input: the bounded body, JSON payloads and the listing's query.

Every failure here is a 400 (or 413/415) problem naming each bad field, never FastAPI's 422.
Bodies are parsed by dependencies rather than FastAPI body parameters so that authentication,
which the router runs first, always answers before the body is judged.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from service import strict_json
from service.errors import BodyTooLarge, InvalidInput, UnsupportedMediaType, reflected

MAX_BODY_BYTES = 64 * 1024
LIMIT_DEFAULT, LIMIT_MAX = 50, 200
CURSOR_MAX_CHARS = 200
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

M = TypeVar("M", bound=BaseModel)


def _too_large() -> BodyTooLarge:
    return BodyTooLarge(f"The request body must not exceed {MAX_BODY_BYTES} bytes.")


async def read_body(request: Request) -> bytes:
    """The raw body of a POST, PUT or PATCH, refused past 64 KiB without reading it all."""
    if request.method not in _BODY_METHODS:
        return b""
    declared = request.headers.get("content-length", "")
    # Compared as text first: int() of thousands of digits is refused (and slow).
    if (
        declared.isascii()
        and declared.isdigit()
        and (len(declared) > len(str(MAX_BODY_BYTES)) or int(declared) > MAX_BODY_BYTES)
    ):
        raise _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _too_large()
    return bytes(body)


RawBody = Annotated[bytes, Depends(read_body)]


def _pointer(location: tuple[int | str, ...]) -> str:
    escaped = (str(part).replace("~", "~0").replace("/", "~1") for part in location)
    return "#" + "".join("/" + part for part in escaped)


def _field_errors(error: ValidationError) -> list[dict[str, str]]:
    return [
        {
            "pointer": reflected(_pointer(item["loc"])),
            "detail": item["msg"].removeprefix("Value error, "),
        }
        for item in error.errors(include_url=False)
    ]


def json_body(model: type[M]) -> Callable[[Request, bytes], Awaitable[M]]:
    """A dependency that parses the body as JSON and validates it against `model`."""

    async def parse(request: Request, raw: RawBody) -> M:
        if not raw:
            raise InvalidInput("A JSON request body is required.")
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            raise UnsupportedMediaType
        try:
            data = strict_json.loads(raw)
        except strict_json.NotIJson as error:
            raise InvalidInput(f"The request body is not I-JSON: {error}.") from None
        try:
            return model.model_validate(data)
        except ValidationError as error:
            raise InvalidInput(errors=_field_errors(error)) from None

    return parse


def _unknown_parameters(request: Request, known: frozenset[str]) -> list[dict[str, str]]:
    # Unknown parameters are errors, not silently ignored: `?user_id=` or `?access_token=`
    # must never look as if it had been honoured.
    unknown = dict.fromkeys(name for name in request.query_params if name not in known)
    return [
        {"parameter": reflected(name), "detail": "is not a parameter of this operation"}
        for name in unknown
    ]


async def no_query(request: Request) -> None:
    """For operations that take no query parameters."""
    if errors := _unknown_parameters(request, frozenset()):
        raise InvalidInput(errors=errors)


NoQuery = Depends(no_query)
_LIST_PARAMETERS = frozenset({"limit", "cursor", "completed"})


@dataclass(frozen=True, slots=True)
class ListQuery:
    limit: int
    cursor: str | None
    completed: bool | None


async def list_query(request: Request) -> ListQuery:
    """`limit`, `cursor` and `completed`, parsed strictly; any other parameter is an error."""
    params = request.query_params
    errors = _unknown_parameters(request, _LIST_PARAMETERS)

    def single(name: str) -> str | None:
        values = params.getlist(name)
        if len(values) > 1:
            errors.append({"parameter": name, "detail": "must be given at most once"})
            return None
        return values[0] if values else None

    limit = LIMIT_DEFAULT
    raw_limit = single("limit")
    if raw_limit is not None:
        # Length first: int() refuses thousands of digits with an exception of its own.
        digits = (
            raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= len(str(LIMIT_MAX))
        )
        if digits and 1 <= int(raw_limit) <= LIMIT_MAX:
            limit = int(raw_limit)
        else:
            errors.append({"parameter": "limit", "detail": f"must be an integer 1-{LIMIT_MAX}"})

    cursor = single("cursor")
    if cursor is not None and not 1 <= len(cursor) <= CURSOR_MAX_CHARS:
        errors.append({"parameter": "cursor", "detail": "is not a cursor from this API"})

    completed: bool | None = None
    raw_completed = single("completed")
    if raw_completed is not None:
        if raw_completed in ("true", "false"):
            completed = raw_completed == "true"
        else:
            errors.append({"parameter": "completed", "detail": "must be true or false"})

    if errors:
        raise InvalidInput(errors=errors)
    return ListQuery(limit=limit, cursor=cursor, completed=completed)


ListQueryDep = Annotated[ListQuery, Depends(list_query)]
