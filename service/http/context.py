"""What the service knows about the request being served: one typed object per request.

`RequestEnvelope` (service.http.envelope) creates it when the request arrives and puts it in
the ASGI scope; the `/api` guard fills in the verified user and the body. Everything else
reads it through `context_of`, never through string keys of its own.
"""

import uuid
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.types import Scope

from service.http.state import State

_KEY = "tasks_api.context"  # the scope key; nothing else in the service names it
_ANSWERED = "tasks_api.answered_by_server"


@dataclass(slots=True)
class RequestContext:
    request_id: str
    # time.monotonic() at arrival: the request's database budget counts from here.
    arrived_at: float
    app: State
    # Set by the /api guard once the token verified; the access log names it.
    user_id: uuid.UUID | None = None
    # The request's body, read (within its bound) by the /api guard.
    body: bytes = b""
    # Set when the server itself answered (a body whose framing broke while the app ran).
    status_by_server: int | None = None
    # The RateLimit fields of the policy that counted the request, for its answer.
    rate_limit_headers: dict[str, str] | None = None


def attach(scope: Scope, context: RequestContext) -> None:
    scope[_KEY] = context


def context_of_scope(scope: Scope) -> RequestContext | None:
    """The request's context, or None for a request the envelope did not see (a bare app)."""
    context: RequestContext | None = scope.get(_KEY)
    return context


def mark_answered_by_server(scope: Scope, status: int, request_id: str) -> None:
    """The server answered this request itself before the app started on it (its body broke
    in the very bytes that completed its head): the envelope logs that answer, and runs
    nothing."""
    scope[_ANSWERED] = (status, request_id)


def answered_by_server(scope: Scope) -> tuple[int, str] | None:
    answered: tuple[int, str] | None = scope.get(_ANSWERED)
    return answered


def context_of(connection: HTTPConnection) -> RequestContext:
    context: RequestContext = connection.scope[_KEY]
    return context
