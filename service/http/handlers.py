"""How every error becomes a problem document: `Problem`s as they are, and everything else
(Starlette's own 404/405, FastAPI's validation, the database, bugs) translated, so a client sees
one shape whatever went wrong."""

import logging
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Any

import psycopg
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.data.errors import UNAVAILABLE, describe_database_error, root_cause
from service.http.context import context_of_scope
from service.http.problems import Problem, ServiceUnavailable, problem_response

log = logging.getLogger(__name__)

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _request_id(scope: Scope) -> str | None:
    context = context_of_scope(scope)
    return None if context is None else context.request_id


def _allowed_methods(request: Request) -> list[str]:
    """Every method any route serves at this path.

    Starlette's 405 lists only the methods of the first route whose path matched, which is
    wrong when, as here, several routes share one path.
    """
    methods: set[str] = set()
    for route in request.app.router.routes:
        for method in _METHODS:
            match, _ = route.matches({**request.scope, "method": method})
            if match is Match.FULL:
                methods.add(method)
    if "GET" in methods:
        methods.add("HEAD")  # answered as GET without a body (service.http.envelope)
    return sorted(methods)


async def _on_problem(request: Request, exc: Problem) -> Response:
    return problem_response(
        exc.status,
        exc.detail,
        request_id=_request_id(request.scope),
        headers=exc.headers,
        errors=exc.errors,
        problem_type=exc.type,
        title=exc.title,
    )


async def _on_http_exception(request: Request, exc: StarletteHTTPException) -> Response:
    request_id = _request_id(request.scope)
    if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        allow = ", ".join(_allowed_methods(request))
        return problem_response(
            405, "Method not allowed on this path.", request_id=request_id, headers={"Allow": allow}
        )
    if exc.status_code == HTTPStatus.NOT_FOUND:
        return problem_response(404, "No such route.", request_id=request_id)
    status = exc.status_code
    return problem_response(status, HTTPStatus(status).description, request_id=request_id)


async def _on_validation_error(request: Request, exc: RequestValidationError) -> Response:
    # Routes validate their own input; this catches anything FastAPI validates itself so that
    # it too is a 400 problem and never FastAPI's default 422.
    errors = [{"detail": str(error.get("msg", "invalid"))} for error in exc.errors()]
    return problem_response(
        400, "The request is invalid.", request_id=_request_id(request.scope), errors=errors
    )


def _count_database_error(request: Request, exc: BaseException) -> None:
    context = context_of_scope(request.scope)
    if context is not None:  # absent only in a bare test app
        context.app.metrics.database_error(type(root_cause(exc)).__name__)


async def _on_database_unavailable(request: Request, exc: Exception) -> Response:
    # Connection refused, timeouts, deadlines and pool exhaustion all mean "not now". The log
    # line carries the driver's or server's own words (host, port, cause), so an operator can
    # tell a wrong password from a pooler refusing a startup parameter.
    log.warning("database unavailable: %s", describe_database_error(exc))
    _count_database_error(request, exc)
    return await _on_problem(request, ServiceUnavailable())


async def _on_database_error(request: Request, exc: psycopg.Error) -> Response:
    # Anything else from the database is a bug, answered as a bare 500 that names nothing.
    log.error("unexpected database error: %s", describe_database_error(exc), exc_info=exc)
    _count_database_error(request, exc)
    return problem_response(500, Problem.detail, request_id=_request_id(request.scope))


# Starlette picks the handler of the nearest class in the exception's MRO.
EXCEPTION_HANDLERS: dict[
    int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]
] = {
    Problem: _on_problem,
    StarletteHTTPException: _on_http_exception,
    RequestValidationError: _on_validation_error,
    psycopg.Error: _on_database_error,
    **dict.fromkeys(UNAVAILABLE, _on_database_unavailable),
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
            # answer, and it is not the server's error (logged as 499 by the envelope).
            return
        except Exception:
            log.exception("unhandled error")
            if started:
                raise  # too late for another response; let the server close the connection
            response = problem_response(500, Problem.detail, request_id=_request_id(scope))
            await response(scope, receive, send)
