"""Reading request input: the bounded body, JSON payloads, and query parameters.

Every failure here is a 400 (or 413/415) problem naming each bad field, never FastAPI's 422.
What a resource's own parameters mean (a listing's filters) is the resource's business; this
module knows only how any of them is read.
"""

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.datastructures import QueryParams
from starlette.requests import Request

from service import strict_json
from service.http.problems import BodyTooLarge, InvalidInput, UnsupportedMediaType, reflected

MAX_BODY_BYTES = 64 * 1024

M = TypeVar("M", bound=BaseModel)


def _too_large() -> BodyTooLarge:
    return BodyTooLarge(f"The request body must not exceed {MAX_BODY_BYTES} bytes.")


async def read_body(request: Request) -> bytes:
    """The raw body, whatever the method, refused past 64 KiB without reading it all. Read
    even where the operation takes none, so that one sent there is refused, not ignored."""
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


def refuse_a_body(raw: bytes) -> None:
    """For operations that take no body: an empty one is fine, any other is a 400 (a client
    that sends `{"completed": false}` to the toggle must not see it flip the task anyway)."""
    if raw:
        raise InvalidInput("This operation takes no request body.")


def parse_json(raw: bytes, content_type: str, content_encoding: str, model: type[M]) -> M:
    """The body as `model`: JSON (read as I-JSON), of media type application/json, and sent
    as it is (a body in any content coding but identity is refused, never decoded or read)."""
    if not raw:
        raise InvalidInput("A JSON request body is required.")
    codings = [coding.strip().lower() for coding in content_encoding.split(",")]
    if any(coding not in ("", "identity") for coding in codings):
        raise UnsupportedMediaType(
            "The request body must not be content-encoded.",
            headers={"Accept-Encoding": "identity"},
        )
    if content_type.partition(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType
    try:
        data = strict_json.loads(raw)
    except strict_json.NotIJson as error:
        raise InvalidInput(f"The request body is not I-JSON: {error}.") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InvalidInput(errors=_field_errors(error)) from None


def refuse_unknown_parameters(query: QueryParams, known: frozenset[str]) -> None:
    """A 400 naming every query parameter not in `known`: `?user_id=` or `?access_token=`
    must never look as if it had been honoured."""
    unknown = dict.fromkeys(name for name in query if name not in known)
    if unknown:
        raise InvalidInput(
            errors=[
                {"parameter": reflected(name), "detail": "is not a parameter of this operation"}
                for name in unknown
            ]
        )


def single_parameter(query: QueryParams, name: str, errors: list[dict[str, str]]) -> str | None:
    """The one value of `name`, or None; a parameter given twice is added to `errors`."""
    values = query.getlist(name)
    if len(values) > 1:
        errors.append({"parameter": name, "detail": "must be given at most once"})
        return None
    return values[0] if values else None
