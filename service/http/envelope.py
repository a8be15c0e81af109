"""What wraps every request: its context, a request id, security headers, one log line, and
(when tracing is on) the server span.

The log line names the route's path template, never the raw path or query (which may carry a
token someone put there), and never a header or body.
"""

import os
import re
import time
from urllib.parse import unquote

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.context import RequestContext, answered_by_server, attach
from service.http.logs import access_log
from service.http.problems import problem_response
from service.http.state import State
from service.http.tracing import ServerSpan

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is echoed only when it is short and plain, so it cannot smuggle anything
# into responses or logs.
_WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # fullmatch: `$` allows a final "\n"
CLIENT_CLOSED_REQUEST = 499
# RFC 3986 host and port: an IP literal, or an IPv4 address or registered name (letters,
# digits, unreserved and sub-delims characters, percent-encoded octets), then an optional port.
_HOST = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|\[v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+\]"
    rb"|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?"
)
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def new_request_id() -> str:
    # 128 random bits, as hex: what uuid4().hex gives, without building a UUID per request.
    return os.urandom(16).hex()


def request_id_for(scope: Scope) -> str:
    """The client's X-Request-ID when it is short and plain, else a new one."""
    offered = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
    return offered if _WELL_FORMED_ID.fullmatch(offered) else new_request_id()


def _host_problem(scope: Scope) -> str | None:
    """Why the request's Host field breaks RFC 9112 section 3.2, or None: HTTP/1.1 needs
    exactly one, and no request may carry two, or one that is not a host and port."""
    hosts = [value for name, value in scope["headers"] if name == b"host"]
    if len(hosts) > 1:
        return "The request must carry one Host header field, not several."
    if not hosts:
        if scope.get("http_version") == "1.1":
            return "An HTTP/1.1 request must carry a Host header field."
        return None
    if not _HOST.fullmatch(hosts[0]):
        return "The Host header field is not a host and port."
    return None


def _path_keeping_encoded_slashes(raw_path: bytes) -> str:
    """The decoded path, except that `%2F` stays `%2F`: an encoded slash belongs to its
    segment and never separates two. (The server decodes it to `/`, so without this
    `PATCH /api/tasks/<id>%2Fcomplete` would toggle, unseen by a proxy rule on the raw path.)"""
    segments = raw_path.decode("latin-1").split("/")
    return "/".join(unquote(segment).replace("/", "%2F") for segment in segments)


class RequestEnvelope:
    """Creates the request's context (arrival, request id, the app's state), adds the headers
    every response carries, logs one line per request, and normalises what routing sees:
    `HEAD` is answered as `GET` without a body (RFC 9110 section 9.3.2; the server drops the
    body), and an encoded slash is not a path separator."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_for(scope)
        context = RequestContext(request_id, time.monotonic(), self.state)
        attach(scope, context)
        # What the app sees; the server keeps its own scope, where HEAD stays HEAD. Copied only
        # when it differs, which is rarely.
        inner = scope
        if scope["method"] == "HEAD":
            inner = {**scope, "method": "GET"}
        raw_path: bytes = scope.get("raw_path") or b""
        if b"%2F" in raw_path or b"%2f" in raw_path:
            inner = {**inner, "path": _path_keeping_encoded_slashes(raw_path)}
        # Nothing sent means the client left before its request was complete (nginx's 499).
        status = CLIENT_CLOSED_REQUEST

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if context.rate_limit_headers is not None:
                    for name, value in context.rate_limit_headers.items():
                        headers.setdefault(name, value)
            await send(message)

        answered = answered_by_server(scope)
        if answered is not None:  # the server itself answered (a body that broke early)
            context.status_by_server, context.request_id = answered
            request_id = context.request_id
        tracing = self.state.tracing
        span = None if tracing is None else ServerSpan(tracing, scope, request_id)
        try:
            host_problem = _host_problem(scope)
            if answered is not None:
                pass
            elif host_problem is not None:
                answer = problem_response(400, host_problem, request_id=request_id)
                await answer(scope, receive, send_with_headers)
            else:
                await self.app(inner, receive, send_with_headers)
        finally:
            if status == CLIENT_CLOSED_REQUEST and context.status_by_server is not None:
                status = context.status_by_server
            route_path: str | None = getattr(inner.get("route"), "path", None)
            template = route_path or "(no route)"
            duration = time.perf_counter() - started
            self.state.metrics.request(template, scope["method"], status, duration)
            user_id = context.user_id
            access_log.info(
                "request",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": template,
                        "status": status,
                        "duration_ms": round(duration * 1000, 2),
                        "user_id": None if user_id is None else str(user_id),
                    }
                },
            )
            if span is not None:  # after the log line, which carries the span's ids
                span.end(route_path, status)
