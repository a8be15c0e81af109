"""What wraps every request: its context, a request id, security headers, one log line.

The log line names the route's path template, never the raw path or query (which may carry a
token someone put there), and never a header or body.
"""

import os
import re
import time
from urllib.parse import unquote

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.context import RequestContext, attach
from service.http.logs import access_log
from service.http.state import State

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is echoed only when it is short and plain, so it cannot smuggle anything
# into responses or logs.
_WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # fullmatch: `$` allows a final "\n"
CLIENT_CLOSED_REQUEST = 499
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def new_request_id() -> str:
    # 128 random bits, as hex: what uuid4().hex gives, without building a UUID per request.
    return os.urandom(16).hex()


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
        offered = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), ""
        )
        request_id = offered if _WELL_FORMED_ID.fullmatch(offered) else new_request_id()
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
            await send(message)

        try:
            await self.app(inner, receive, send_with_headers)
        finally:
            route = inner.get("route")
            template = getattr(route, "path", None) or "(no route)"
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
