"""JSON responses encoded once, with orjson, from plain dicts."""

from typing import Any

import orjson
from starlette.responses import Response


def json_body_bytes(content: Any) -> bytes:
    return orjson.dumps(content)


def json_response(
    content: Any, *, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(content),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )
