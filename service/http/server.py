"""The HTTP server's side of the service's bounds: uvicorn's httptools protocol, with limits.

uvicorn offers no public hook for any of this, so this module subclasses its httptools
protocol, replaces `data_received` with a copy that counts what arrives, and uses attributes
and methods uvicorn does not document. It is the one module of the service that may (ruff's
SLF001 is lifted for it alone); uvicorn is pinned to the minor version it was written against
(pyproject.toml), and tests/integration/test_library_seams.py fails, naming what moved, when
a name it relies on changes or uvicorn's own `data_received` does.

uvicorn closes idle keep-alive connections, but not a connection that sends nothing, stops
halfway through its headers, or stops before its declared body length (uvicorn issue #157),
and it sets no limit on header size. From one host, with no token, such connections exhaust
the process's file descriptors or its memory. `BoundedHttpProtocol` closes each gap where it
opens, in the server, so the service is safe without a proxy in front (docs/DEPLOY.md shows
the matching proxy settings):

- receipt deadline: a complete request (request line, headers and body) must arrive within
  HTTP_RECEIVE_TIMEOUT_SECONDS of its first byte, or of the connection opening for its first
  request. A late head is answered 408 and closed; a late body closes the connection.
- header limit: a request line and headers over HTTP_MAX_HEADER_BYTES are answered 431 (414
  when the request target alone is over it) as soon as they pass it, without buffering the
  rest.
- connection bound: at most HTTP_MAX_CONNECTIONS connections per worker process. At the
  bound, a new connection evicts the oldest one that has no request being served (idle, or
  still sending its request), so a flood of half-open connections cannot lock out a client
  that sends a whole request; when every connection is busy, the new one gets 503 at once.

Every response the server writes itself (these, and 400 for a request it cannot parse)
carries the headers the app's responses carry: X-Request-ID, Cache-Control: no-store,
X-Content-Type-Options: nosniff, as an RFC 9457 problem document.
"""

import asyncio
from collections import OrderedDict
from http import HTTPStatus
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.config import get_settings
from service.http.context import context_of_scope, mark_answered_by_server
from service.http.envelope import (
    REQUEST_ID_HEADER,
    SECURITY_HEADERS,
    new_request_id,
    request_id_for,
)
from service.http.logs import access_log
from service.http.problems import PROBLEM_JSON, problem_response

LINGER_SECONDS = 2.0


def server_options() -> dict[str, Any]:
    """uvicorn settings the service always runs with (`tasks-api serve`, and the tests)."""
    return {
        "http": "service.http.server:BoundedHttpProtocol",
        # The API has no WebSocket endpoint: an upgrade request is an ordinary HTTP request
        # (answered by the app, with its headers), not a handshake uvicorn answers itself.
        "ws": "none",
        # uvicorn would take the client's address from X-Forwarded-For when the peer is
        # 127.0.0.1; the service decides that itself, from TRUSTED_PROXIES only
        # (service.http.client_address).
        "proxy_headers": False,
    }


class _Refused(Exception):
    def __init__(self, status: HTTPStatus, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _framing_detail(error: Exception) -> str:
    # httptools names what it refused ("Invalid character in chunk size", "Request has
    # invalid `Transfer-Encoding`"): the client's own bytes, described, never echoed.
    reason = str(error).strip().rstrip(".")
    return (
        f"The request is not valid HTTP/1.1: {reason}."
        if reason
        else ("The request is not valid HTTP/1.1.")
    )


class BoundedHttpProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn builds this protocol itself, in every worker, and passes it nothing of ours:
        # the settings are read (once per process) as everything else reads them.
        limits = get_settings()
        self._receive_timeout = limits.http_receive_timeout_seconds
        self._max_header_bytes = limits.http_max_header_bytes
        self._max_connections = limits.http_max_connections
        self._receipt_timer: asyncio.TimerHandle | None = None
        self._receiving_head = True  # no request line and headers complete yet
        self._request_begun = False  # some of the current request has arrived
        self._head_bytes = 0  # received while receiving the head
        self._parsed_head_bytes = 0  # request target and header fields, as parsed
        self._discarding = False  # answered and closing: input is read and dropped

    # --- connections -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections and not self._evict_one():
            self._refuse(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "The server has too many connections; try again shortly.",
                {"Retry-After": "1"},
                linger=False,  # nothing was read, and a flood must not hold descriptors
            )
            return
        self._mark_idle()
        self._arm_receipt_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_receipt_timer()
        self._idle().pop(self, None)
        super().connection_lost(exc)

    def _serving_a_request(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _idle(self) -> "OrderedDict[BoundedHttpProtocol, None]":
        """This worker's connections that no request is being served on, oldest first."""
        idle: OrderedDict[BoundedHttpProtocol, None] | None = getattr(
            self.server_state, "tasks_api_idle", None
        )
        if idle is None:
            idle = OrderedDict()
            self.server_state.tasks_api_idle = idle  # type: ignore[attr-defined]
        return idle

    def _mark_idle(self) -> None:
        idle = self._idle()
        idle.pop(self, None)
        idle[self] = None  # the newest idle connection, evicted last

    def _evict_one(self) -> bool:
        """Close the connection idle (or still receiving its request) for longest, if any.
        O(1): a flood of connections at the bound costs the same per connection as one."""
        idle = self._idle()
        while idle:
            oldest, _ = idle.popitem(last=False)
            if oldest is self or oldest.transport.is_closing():
                continue
            self.connections.discard(oldest)
            oldest.transport.close()
            return True
        return False

    # --- the receipt deadline ----------------------------------------------------------

    def _arm_receipt_timer(self) -> None:
        if self._receipt_timer is None:
            self._receipt_timer = self.loop.call_later(self._receive_timeout, self._receipt_expired)

    def _disarm_receipt_timer(self) -> None:
        if self._receipt_timer is not None:
            self._receipt_timer.cancel()
            self._receipt_timer = None

    def _receipt_expired(self) -> None:
        self._receipt_timer = None
        if self.transport.is_closing():
            return
        if self._receiving_head and self._request_begun:
            self._refuse(HTTPStatus.REQUEST_TIMEOUT, "The request did not arrive in time.")
        else:
            # Nothing sent at all (no one to answer), or a body that stopped: the app,
            # waiting for the body, sees the client disconnect.
            self.transport.close()

    # --- parsing -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        self._unset_keepalive_if_required()
        if self._receiving_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # with ws="none" the request is served as plain HTTP
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, _Refused):
                self._refuse(error.__context__.status, error.__context__.detail)
            else:
                self.send_400_response("The request is not valid HTTP/1.1.")
            return
        except httptools.HttpParserError as error:
            self.send_400_response(_framing_detail(error))
            return
        # One header larger than the limit is refused while it is still arriving.
        if self._receiving_head and self._head_bytes > self._max_header_bytes:
            self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, self._header_detail())

    def _header_detail(self) -> str:
        return f"The request line and headers must not exceed {self._max_header_bytes} bytes."

    def _count_head(self, size: int, *, in_target: bool = False) -> None:
        self._parsed_head_bytes += size
        if self._parsed_head_bytes <= self._max_header_bytes:
            return
        if in_target:  # the request target alone is over the limit
            raise _Refused(
                HTTPStatus.REQUEST_URI_TOO_LONG,
                f"The request target must not exceed {self._max_header_bytes} bytes.",
            )
        raise _Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, self._header_detail())

    def on_message_begin(self) -> None:
        # A pipelined request's deadline runs from its own first byte, even while uvicorn has
        # paused reading until the request before it is answered; with a deadline well above
        # the request budget (DB_REQUEST_TIMEOUT_SECONDS), that cannot cut an honest client off.
        super().on_message_begin()
        self._receiving_head = True
        self._request_begun = True
        self._parsed_head_bytes = 0
        self._arm_receipt_timer()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url), in_target=True)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._receiving_head:
            # A field of a chunked body's trailer. It never becomes a request header
            # (RFC 9110 section 6.5.1): uvicorn would append it to the headers the app reads,
            # so an Authorization or Content-Type sent there would act as one.
            return
        self._count_head(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._idle().pop(self, None)  # a request is being served: never evicted
        self._receiving_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm_receipt_timer()
        self._request_begun = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._serving_a_request() and not self.transport.is_closing():
            self._mark_idle()

    def _close_after_answer(self) -> None:
        """Close once the client can have read the answer.

        Closing a socket with unread input makes the kernel reset the connection, and a reset
        can destroy the answer before the client reads it (a 431 for a header still being
        sent, say). So: end our side, discard what still arrives for LINGER_SECONDS at
        most, then close, as nginx's lingering close does.
        """
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._discarding = True
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _unsupported_upgrade_warning(self) -> None:
        pass  # an upgrade request is served as plain HTTP; nothing to warn about

    # --- responses the server writes itself --------------------------------------------

    def send_400_response(self, msg: str) -> None:
        self._refuse(HTTPStatus.BAD_REQUEST, msg)

    def _refuse(
        self,
        status: HTTPStatus,
        detail: str,
        headers: dict[str, str] | None = None,
        *,
        linger: bool = True,
    ) -> None:
        """Answer with a problem document and close the connection."""
        self._disarm_receipt_timer()
        if self.transport.is_closing():
            return
        if self._serving_a_request():
            self._refuse_the_request_being_served(status, detail)
            return
        request_id = new_request_id()
        self._write_problem(status, detail, request_id, headers)
        if linger:
            self._close_after_answer()
        else:
            self.transport.close()
        access_log.info(
            "request",
            extra={
                "fields": {
                    "request_id": request_id,
                    "path": "(refused by the server)",
                    "status": int(status),
                    "detail": detail,
                }
            },
        )

    def _refuse_the_request_being_served(self, status: HTTPStatus, detail: str) -> None:
        """A request whose body went wrong (a chunk size that does not parse, a coding that is
        not chunked) while the app already runs: answered here, if the app has not started its
        answer and no pipelined request waits, else the connection is closed (a second
        response cannot be interleaved with one under way). The app then sees the client gone
        and its answer is dropped; the envelope logs the request with this status."""
        cycle = self.cycle
        in_its_body = self._request_begun and not self._receiving_head
        if cycle is None or cycle.response_started or self.pipeline or not in_its_body:
            self.transport.close()
            return
        scope: Any = cycle.scope  # uvicorn's TypedDict, which the app reads as a mapping
        context = context_of_scope(scope)
        if context is not None:  # the app is under way: the envelope logs the status given
            request_id = context.request_id
            context.status_by_server = int(status)
        else:  # the app has not started: it will find the request answered
            request_id = request_id_for(scope)
            mark_answered_by_server(scope, int(status), request_id)
        self._write_problem(status, detail, request_id, None)
        cycle.disconnected = True
        cycle.message_event.set()  # the app waiting for the body sees the disconnect
        self._close_after_answer()

    def _write_problem(
        self,
        status: HTTPStatus,
        detail: str,
        request_id: str,
        headers: dict[str, str] | None,
    ) -> None:
        # The app's one problem renderer.
        body = bytes(problem_response(status, detail, request_id=request_id).body)
        fields = [
            *((name.decode(), value.decode()) for name, value in self.server_state.default_headers),
            ("Content-Type", PROBLEM_JSON),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            (REQUEST_ID_HEADER, request_id),
            *SECURITY_HEADERS.items(),
            *(headers or {}).items(),
        ]
        head = f"HTTP/1.1 {int(status)} {status.phrase}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in fields
        )
        self.transport.write(head.encode("latin-1") + b"\r\n" + body)
