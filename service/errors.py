"""Every error the service answers, rendered as RFC 9457 problem details.

Routes raise `Problem` subclasses; the handlers below also translate Starlette's own 404/405,
database outages and unexpected exceptions, so every error a client sees has one shape.
"""

import logging
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db import DeadlineExceeded, RoleBypassesRowSecurity, describe_database_error

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# A problem names what was wrong without becoming an amplifier: a name the client sent is
# echoed at most this long, and at most this many errors are listed.
REFLECTED_CHARS = 64
MAX_ERRORS = 20


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


class TaskNotFound(Problem):
    status = HTTPStatus.NOT_FOUND
    detail = "Task not found."


class TaskLimitReached(Problem):
    status = HTTPStatus.CONFLICT
    type = "tag:secure-tasks-api,2026:task-limit-reached"
    title = "Task limit reached"


class BodyTooLarge(Problem):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaType(Problem):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    detail = "The request body must be application/json."


RETRY_AFTER_SECONDS = 2


class ServiceUnavailable(Problem):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    detail = "The database is not answering; try again shortly."

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def request_id_of(scope: Scope) -> str | None:
    """The id RequestContext gave this request, repeated in problem bodies."""
    state: dict[str, Any] = scope.get("state", {})
    request_id: str | None = state.get("request_id")
    return request_id


def problem_response(
    scope: Scope,
    status: int,
    detail: str,
    *,
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
    if (request_id := request_id_of(scope)) is not None:
        body["request_id"] = request_id
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )


def _allowed_methods(request: Request) -> list[str]:
    """Every method any route serves at this path.

    Starlette's 405 lists only the methods of the first route whose path matched, which is
    wrong when, as here, several routes share one path.
    """
    methods: set[str] = set()
    for route in request.app.router.routes:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            match, _ = route.matches({**request.scope, "method": method})
            if match is Match.FULL:
                methods.add(method)
    if "GET" in methods:
        methods.add("HEAD")  # answered as GET without a body (service.middleware)
    return sorted(methods)


async def _on_problem(request: Request, exc: Problem) -> Response:
    return problem_response(
        request.scope,
        exc.status,
        exc.detail,
        headers=exc.headers,
        errors=exc.errors,
        problem_type=exc.type,
        title=exc.title,
    )


async def _on_http_exception(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        allow = ", ".join(_allowed_methods(request))
        return problem_response(
            request.scope, 405, "Method not allowed on this path.", headers={"Allow": allow}
        )
    if exc.status_code == HTTPStatus.NOT_FOUND:
        return problem_response(request.scope, 404, "No such route.")
    status = exc.status_code
    return problem_response(request.scope, status, HTTPStatus(status).description)


async def _on_validation_error(request: Request, exc: RequestValidationError) -> Response:
    # Routes validate their own input; this catches anything FastAPI validates itself so that
    # it too is a 400 problem and never FastAPI's default 422.
    errors = [{"detail": str(error.get("msg", "invalid"))} for error in exc.errors()]
    return problem_response(request.scope, 400, "The request is invalid.", errors=errors)


async def _on_database_unavailable(request: Request, exc: Exception) -> Response:
    # Connection refused, timeouts, deadlines and pool exhaustion all mean "not now". The log
    # line carries the driver's or server's own words (host, port, cause), so an operator can
    # tell a wrong password from a pooler refusing a startup parameter.
    log.warning("database unavailable: %s", describe_database_error(exc))
    _count_database_error(request, exc)
    return await _on_problem(request, ServiceUnavailable())


def _count_database_error(request: Request, exc: Exception) -> None:
    app_state = getattr(request.state, "app", None)  # absent only in a bare test app
    if app_state is not None:
        app_state.metrics.database_error(type(exc).__name__)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected database error: %s", describe_database_error(exc), exc_info=exc)
    if isinstance(exc, DBAPIError):
        _count_database_error(request, exc)
    return problem_response(request.scope, 500, Problem.detail)


async def _on_database_error(request: Request, exc: DBAPIError) -> Response:
    # A dropped connection surfaces as a DBAPIError marked as a disconnect; anything else
    # from the database is a bug, answered as a bare 500.
    if exc.connection_invalidated:
        return await _on_database_unavailable(request, exc)
    return await _on_unexpected(request, exc)


# Starlette picks the handler of the nearest class in the exception's MRO.
EXCEPTION_HANDLERS: dict[
    int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]
] = {
    Problem: _on_problem,
    StarletteHTTPException: _on_http_exception,
    RequestValidationError: _on_validation_error,
    OperationalError: _on_database_unavailable,
    PoolTimeoutError: _on_database_unavailable,
    DeadlineExceeded: _on_database_unavailable,
    RoleBypassesRowSecurity: _on_database_unavailable,
    DBAPIError: _on_database_error,
}


class AnswerUnhandledErrors:
    """Answers an exception no handler took with a bare 500 problem.

    Starlette's own 500 handler re-raises after responding, so the server logs the error a
    second time and drops the keep-alive connection; this middleware ends the story here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            # The client went away in the middle of sending its request: nobody is left to
            # answer, and it is not the server's error (logged as 499 by RequestContext).
            return
        except Exception:
            log.exception("unhandled error")
            if started:
                raise  # too late for another response; let the server close the connection
            await problem_response(scope, 500, Problem.detail)(scope, receive, send)
