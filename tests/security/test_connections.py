"""Rule: the served process bounds what an anonymous client can hold, without a proxy.

Each test runs `tasks-api serve` itself, as deployed, and talks to it over raw sockets:
connections that send nothing, or stop halfway through a request, are closed after the
receipt deadline; headers over the limit are refused with 431 as they arrive; each worker
holds a bounded number of connections, and `/healthz` keeps answering while an attacker
holds thousands of half-open ones. Responses the server writes itself (not the app) carry
the same headers as every other response.
"""

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest

from tests.support.live import RunningService, service_process
from tests.support.tokens import SECRET
from tests.support.wire import connect, read_until_closed, server_answer, status_and_headers

RECEIVE_TIMEOUT = 1.0


@contextmanager
def bounded_service(
    service_database_url: str, **limits: str
) -> Iterator[tuple[RunningService, int]]:
    env = {
        "DATABASE_URL": service_database_url,
        "JWT_SECRET": SECRET,
        "HTTP_RECEIVE_TIMEOUT_SECONDS": str(RECEIVE_TIMEOUT),
        **limits,
    }
    with service_process("--no-migrate", env=env, log_level="info") as service:
        yield service, int(service.base_url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def served(service_database_url: str) -> Iterator[tuple[RunningService, int]]:
    with bounded_service(service_database_url) as running:
        yield running


def _assert_common_headers(headers: dict[str, str]) -> None:
    assert len(headers["x-request-id"]) == 32
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-type"] == "application/problem+json"


# --- The receipt deadline ------------------------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed_after_the_deadline(
    served: tuple[RunningService, int],
) -> None:
    _, port = served
    with connect(port) as sock:
        started = time.monotonic()
        assert read_until_closed(sock, within=RECEIVE_TIMEOUT + 2) == b""
        assert time.monotonic() - started >= RECEIVE_TIMEOUT * 0.9


def test_a_request_that_stops_halfway_through_its_headers_gets_408(
    served: tuple[RunningService, int],
) -> None:
    _, port = served
    stopped = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: "
    status, headers = server_answer(port, stopped, within=RECEIVE_TIMEOUT + 2)
    assert status == 408
    _assert_common_headers(headers)


def test_a_header_trickled_a_byte_at_a_time_does_not_extend_the_deadline(
    served: tuple[RunningService, int],
) -> None:
    _, port = served
    with connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        started = time.monotonic()
        sock.settimeout(0.2)
        closed_after = None
        while time.monotonic() - started < RECEIVE_TIMEOUT * 4:
            try:
                sock.send(b"a")
                if sock.recv(65536):
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
    assert closed_after is not None
    assert closed_after < RECEIVE_TIMEOUT + 1


def test_a_body_that_stops_before_its_declared_length_is_closed(
    served: tuple[RunningService, int],
) -> None:
    _, port = served
    with connect(port) as sock:
        sock.sendall(
            b"POST /api/tasks HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"title": "'
        )
        started = time.monotonic()
        read_until_closed(sock, within=RECEIVE_TIMEOUT + 2)
        assert time.monotonic() - started < RECEIVE_TIMEOUT + 1


def test_a_finished_request_on_a_slow_connection_is_answered(
    served: tuple[RunningService, int],
) -> None:
    # The control: the same request completed within the deadline, in pieces, is served.
    _, port = served
    with connect(port) as sock:
        for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: t\r\n", b"Connection: close\r\n\r\n"):
            sock.sendall(piece)
            time.sleep(RECEIVE_TIMEOUT / 5)
        status, _ = status_and_headers(read_until_closed(sock, within=5))
    assert status == 200


# --- The header limit ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [20 * 1024, 1024 * 1024, 64 * 1024 * 1024])
def test_headers_over_the_limit_are_refused_with_431_as_they_arrive(
    served: tuple[RunningService, int], size: int
) -> None:
    service, port = served
    with connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ")
        sent = 0
        try:
            while sent < size:
                sent += sock.send(b"a" * min(65536, size - sent))
        except OSError:
            pass  # the server answered and closed while the header was still arriving
        response = read_until_closed(sock, within=5)
    status, headers = status_and_headers(response)
    assert status == 431
    _assert_common_headers(headers)
    assert "16384 bytes" in json.loads(response.split(b"\r\n\r\n", 1)[1])["detail"]
    assert httpx.get(f"{service.base_url}/healthz", timeout=2).status_code == 200


def test_a_request_target_over_the_limit_is_refused_with_414(
    served: tuple[RunningService, int],
) -> None:
    _, port = served
    long_target = b"GET /api/tasks?" + b"x" * (20 * 1024) + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    status, headers = server_answer(port, long_target, within=5)
    assert status == 414
    _assert_common_headers(headers)


def test_headers_just_under_the_limit_are_served(served: tuple[RunningService, int]) -> None:
    service, _ = served
    response = httpx.get(f"{service.base_url}/healthz", headers={"X-Fill": "a" * 15_000})
    assert response.status_code == 200


# --- Responses the server writes itself ---------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n"],
    ids=["no request line", "unknown version", "malformed header"],
)
def test_a_request_the_server_cannot_parse_gets_a_problem_with_the_common_headers(
    served: tuple[RunningService, int], request_bytes: bytes
) -> None:
    _, port = served
    status, headers = server_answer(port, request_bytes, within=5)
    assert status == 400
    _assert_common_headers(headers)


def test_a_websocket_upgrade_is_an_ordinary_request_answered_by_the_app(
    served: tuple[RunningService, int],
) -> None:
    _, port = served
    with connect(port) as sock:
        sock.sendall(
            b"GET /api/tasks HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        sock.settimeout(5)
        status, headers = status_and_headers(sock.recv(65536))
    assert status == 401  # the app's answer: no token
    _assert_common_headers(headers)
    assert "upgrade" not in headers


# --- The connection bound ------------------------------------------------------------------------


def test_healthz_keeps_answering_while_2000_half_open_connections_are_held(
    served: tuple[RunningService, int],
) -> None:
    service, port = served
    with ExitStack() as held:
        for index in range(2000):
            sock = held.enter_context(connect(port))
            if index % 2:
                sock.sendall(b"GET /api/tasks HTTP/1.1\r\nHost: t\r\nX-Half: ")
        timings = []
        with httpx.Client(base_url=service.base_url, timeout=5) as client:
            for _ in range(20):
                started = time.monotonic()
                assert client.get("/healthz").status_code == 200
                timings.append(time.monotonic() - started)
                time.sleep(0.02)
    timings.sort()
    assert timings[len(timings) // 2] < 0.1, timings
    assert timings[-1] < 1.0, timings


def test_each_worker_holds_at_most_the_configured_connections(
    service_database_url: str,
) -> None:
    with (
        bounded_service(service_database_url, HTTP_MAX_CONNECTIONS="50") as (service, port),
        ExitStack() as held,
    ):
        sockets = [held.enter_context(connect(port)) for _ in range(200)]
        time.sleep(0.5)
        open_ones = 0
        for sock in sockets:
            sock.settimeout(0.05)
            try:
                if sock.recv(1) != b"":
                    open_ones += 1
            except TimeoutError:
                open_ones += 1  # nothing to read and not closed: still held
        # The newest connection is never the one evicted: it is served.
        assert httpx.get(f"{service.base_url}/healthz", timeout=2).status_code == 200
    assert open_ones <= 50


def test_at_the_bound_with_every_connection_busy_a_newcomer_gets_503_at_once(
    service_database_url: str,
) -> None:
    with bounded_service(service_database_url, HTTP_MAX_CONNECTIONS="3") as (service, port):
        asset = httpx.get(f"{service.base_url}/docs").text.split('src="')[1].split('"')[0]
        with ExitStack() as held:
            # Busy: pipelined requests for a 1.5 MB file, never read, so each response waits
            # on a full socket buffer and its connection cannot be evicted.
            for _ in range(3):
                sock = held.enter_context(connect(port))
                request = f"GET {asset} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
                sock.sendall(request * 8)
            time.sleep(0.5)
            with connect(port) as newcomer:
                started = time.monotonic()
                response = read_until_closed(newcomer, within=2)
                waited = time.monotonic() - started
    status, headers = status_and_headers(response)
    assert status == 503
    assert headers["retry-after"] == "1"
    _assert_common_headers(headers)
    assert waited < 0.5
