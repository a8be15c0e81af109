"""RFC 9457 problem details: the one shape of every error the service answers.

Routes raise `Problem` subclasses. The generic ones live here; a resource's own (its "not
found", its limits) live with the resource and subclass these. service.http.handlers renders
them, and turns everything else (the framework's 404/405, database outages, bugs) into one.
"""

from http import HTTPStatus
from typing import Any

import orjson
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"
# A problem names what was wrong without becoming an amplifier: a name the client sent is
# echoed at most this long, and at most this many errors are listed.
REFLECTED_CHARS = 64
MAX_ERRORS = 20
RETRY_AFTER_SECONDS = 2


def reflected(text: str) -> str:
    """Client text for a problem body, cut to REFLECTED_CHARS characters."""
    if len(text) <= REFLECTED_CHARS:
        return text
    return text[: REFLECTED_CHARS - 1] + "\u2026"


class Problem(Exception):
    """An error with an HTTP status; `detail` is shown to the client, so it names no internals."""

    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    detail: str = "The server could not complete the request."
    # A problem type of this API (declared in the contract), or about:blank with the status's
    # own phrase as its title.
    type: str = "about:blank"
    title: str | None = None

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(detail or self.detail)
        self.detail = detail or self.detail
        self.headers = headers or {}
        self.errors = errors


class InvalidInput(Problem):
    status = HTTPStatus.BAD_REQUEST
    detail = "The request is invalid."


class NotAuthenticated(Problem):
    status = HTTPStatus.UNAUTHORIZED

    def __init__(self, detail: str, *, token_presented: bool) -> None:
        # RFC 6750 section 3: name the error only when the client actually sent a token.
        challenge = 'Bearer error="invalid_token"' if token_presented else "Bearer"
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class NotFound(Problem):
    """Missing, or the caller's to know nothing about: the two are answered alike."""

    status = HTTPStatus.NOT_FOUND
    detail = "Not found."


class PreconditionFailed(Problem):
    status = HTTPStatus.PRECONDITION_FAILED
    detail = (
        "It has changed since the version your If-Match names: read it again for its current "
        "ETag, then decide."
    )


class PreconditionRequired(Problem):
    status = HTTPStatus.PRECONDITION_REQUIRED
    detail = "This service requires If-Match on every change: send the ETag you last read."


class TooManyRequests(Problem):
    status = HTTPStatus.TOO_MANY_REQUESTS
    detail = "Too many requests; try again after the number of seconds Retry-After gives."


class BodyTooLarge(Problem):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaType(Problem):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    detail = "The request body must be application/json."


class ServiceUnavailable(Problem):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    detail = "The database is not answering; try again shortly."

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def problem_response(
    status: int,
    detail: str,
    *,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, str]] | None = None,
    problem_type: str = "about:blank",
    title: str | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": problem_type,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors[:MAX_ERRORS]
    if request_id is not None:
        body["request_id"] = request_id
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )
