"""What wraps every request: a request id, security headers, and one structured log line.

The log line names the route's path template, never the raw path or query (which may carry a
token someone put there), and never a header or body.
"""

import logging
import os
import re
import time
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import problem_response
from service.metrics import Metrics

access_log = logging.getLogger("tasks_api.access")

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is echoed only when it is short and plain, so it cannot smuggle anything
# into responses or logs.
_WELL_FORMED_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # fullmatch: `$` allows a final "\n"
CLIENT_CLOSED_REQUEST = 499
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


class ProblemCORSMiddleware(CORSMiddleware):
    """Starlette's CORS handling, with a refused preflight answered as a problem document."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < HTTPStatus.BAD_REQUEST:
            return response
        # No scope here; RequestContext still adds the request id header.
        detail = "This origin, method or header is not allowed cross-origin."
        return problem_response({}, response.status_code, detail)


def _path_keeping_encoded_slashes(raw_path: bytes) -> str:
    """The decoded path, except that `%2F` stays `%2F`: an encoded slash belongs to its
    segment and never separates two. (The server decodes it to `/`, so without this
    `PATCH /api/tasks/<id>%2Fcomplete` would toggle, unseen by a proxy rule on the raw path.)"""
    segments = raw_path.decode("latin-1").split("/")
    return "/".join(unquote(segment).replace("/", "%2F") for segment in segments)


class RequestContext:
    """Stamps arrival and a request id, adds the headers every response carries, logs one
    line per request, and normalises what routing sees: `HEAD` is answered as `GET`
    without a body (RFC 9110 section 9.3.2; the server drops the body), and an encoded
    slash is not a path separator."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics or Metrics.off()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # The request's database budget counts from here (service.db.request_database).
        arrived_at = time.monotonic()
        offered = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), ""
        )
        # 128 random bits, as hex: what uuid4().hex gives, without building a UUID per request.
        request_id = offered if _WELL_FORMED_ID.fullmatch(offered) else os.urandom(16).hex()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["arrived_at"] = arrived_at
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
            self.metrics.request(template, scope["method"], status, duration)
            access_log.info(
                "request",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": template,
                        "status": status,
                        "duration_ms": round(duration * 1000, 2),
                        "user_id": state.get("user_id"),
                    }
                },
            )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # orjson: this runs once per request, and the standard json module is several times slower.
        return orjson.dumps(entry, default=str).decode()


def logging_config(level: str) -> dict[str, Any]:
    """uvicorn's log config with the service's own loggers writing JSON lines to stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "service": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "tasks_api": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
        },
    }
