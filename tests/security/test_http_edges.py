"""Rule: the service reads each request one way, as RFC 9110 and RFC 9112 say, and answers
every malformed one, so no proxy in front can read it differently.

- Only the head's fields count: a chunked body's trailer never acts as a request header.
- Every framing error (a transfer coding that is unknown or not final, a chunk size that does
  not parse or overflows) is answered 400 with a problem, the connection closed, and logged as
  400.
- HTTP/1.1 needs exactly one valid Host field; no request may carry two, or an invalid one.
- A body in a content coding other than identity is a 415 with `Accept-Encoding: identity`,
  never decoded or read as JSON.
- A body sent to an operation that takes none (GET, DELETE, the toggle) is a 400, and nothing
  changes: a toggle sent `{"completed": false}` does not flip the task.

Each is checked straight on PostgreSQL and through PgBouncer.
"""

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.factories import ApiUser, TaskFactory, UserFactory
from tests.support.live import RunningService, service_process
from tests.support.tokens import SECRET
from tests.support.wire import Reply, chunked, exchange

pytestmark = pytest.mark.both_routes


@pytest.fixture(scope="module")
def served(service_database_url: str) -> Iterator[tuple[RunningService, int]]:
    env = {"DATABASE_URL": service_database_url, "JWT_SECRET": SECRET}
    with service_process("--no-migrate", env=env, log_level="info") as service:
        yield service, int(service.base_url.rsplit(":", 1)[1])


def _head(method: str, path: str, *fields: str, host: str | None = "127.0.0.1") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", *([f"Host: {host}"] if host is not None else [])]
    return ("\r\n".join([*lines, *fields, "Connection: close"]) + "\r\n\r\n").encode()


def _statuses(service: RunningService, request_ids: set[str]) -> list[int]:
    """The statuses logged for a request: by the app under its id, or by the server, which
    names the id it gave the request in its answer."""
    lines = service.json_lines()
    return [line["status"] for line in lines if line.get("request_id") in request_ids]


def _assert_problem(reply: Reply, status: int) -> dict[str, Any]:
    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = reply.json()
    assert body["status"] == status
    return body


# --- Trailers ------------------------------------------------------------------------------------


def test_a_token_sent_only_in_a_trailer_authenticates_nothing(
    served: tuple[RunningService, int],
) -> None:
    service, port = served
    user = UserFactory.create()
    for method, path in (
        ("POST", "/api/tasks"),
        ("PUT", "/api/tasks/x"),
        ("DELETE", "/api/tasks/x"),
    ):
        body = chunked(
            b'{"title": "smuggled"}', trailer=f"Authorization: Bearer {user.token}\r\n".encode()
        )
        head = _head(method, path, "Content-Type: application/json", "Transfer-Encoding: chunked")
        _assert_problem(exchange(port, head + body), 401)
    listed = httpx.get(f"{service.base_url}/api/tasks", headers=user.headers).json()
    assert listed["tasks"] == []


def test_a_content_type_sent_only_in_a_trailer_is_not_honoured(
    served: tuple[RunningService, int],
) -> None:
    _, port = served
    user = UserFactory.create()
    body = chunked(b'{"title": "t"}', trailer=b"Content-Type: application/json\r\n")
    head = _head(
        "POST", "/api/tasks", f"Authorization: Bearer {user.token}", "Transfer-Encoding: chunked"
    )
    _assert_problem(exchange(port, head + body), 415)


def test_a_trailer_does_not_disturb_a_valid_request(served: tuple[RunningService, int]) -> None:
    _, port = served
    user = UserFactory.create()
    body = chunked(b'{"title": "with a trailer"}', trailer=b"X-Checksum: abc\r\n")
    head = _head(
        "POST",
        "/api/tasks",
        f"Authorization: Bearer {user.token}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
    )
    reply = exchange(port, head + body)
    assert reply.status == 201
    assert reply.json()["title"] == "with a trailer"


# --- Framing -------------------------------------------------------------------------------------

FRAMING_ERRORS = {
    "unknown transfer coding": ("Transfer-Encoding: gzip", b'{"title": "t"}'),
    "chunked is not the final coding": ("Transfer-Encoding: chunked, gzip", chunked(b"{}")),
    "chunk size that does not parse": ("Transfer-Encoding: chunked", b"zz\r\n{}\r\n0\r\n\r\n"),
    "chunk size that overflows": (
        "Transfer-Encoding: chunked",
        b"fffffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
    ),
    "chunk longer than its size": ("Transfer-Encoding: chunked", b"2\r\n{}}}}\r\n0\r\n\r\n"),
    "both Content-Length and chunked": (
        "Transfer-Encoding: chunked\r\nContent-Length: 4",
        chunked(b"{}"),
    ),
}


@pytest.mark.parametrize("case", FRAMING_ERRORS, ids=str)
def test_every_framing_error_is_answered_400_closed_and_logged_as_400(
    served: tuple[RunningService, int], case: str
) -> None:
    service, port = served
    user = UserFactory.create()
    framing, body = FRAMING_ERRORS[case]
    request_id = f"framing-{abs(hash(case))}"
    head = _head(
        "POST",
        "/api/tasks",
        f"Authorization: Bearer {user.token}",
        "Content-Type: application/json",
        f"X-Request-ID: {request_id}",
        framing,
    )
    reply = exchange(port, head + body)  # reads until the server closes the connection
    _assert_problem(reply, 400)
    assert reply.headers["connection"] == "close"
    # One log line for the request, with the status it got; none says 499. Where the app was
    # already under way, its line is written when it winds up, a moment after the answer.
    ids = {request_id, reply.headers["x-request-id"]}
    deadline = time.monotonic() + 5
    while not _statuses(service, ids) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # a second line, were one written, would follow the first at once
    assert _statuses(service, ids) == [400]
    listed = httpx.get(f"{service.base_url}/api/tasks", headers=user.headers).json()
    assert listed["tasks"] == []


# --- Host ----------------------------------------------------------------------------------------

HOST_REFUSED = {
    "HTTP/1.1 without Host": (None, ()),
    "two Host fields": ("a.example", ("Host: b.example",)),
    "a space in the host": ("a b.example", ()),
    "an unclosed IP literal": ("[::1", ()),
    "a port that is not a number": ("a.example:http", ()),
    "a user in the host": ("user@a.example", ()),
}


@pytest.mark.parametrize("case", HOST_REFUSED, ids=str)
def test_a_request_without_exactly_one_valid_host_is_400(
    served: tuple[RunningService, int], case: str
) -> None:
    _, port = served
    host, extra = HOST_REFUSED[case]
    reply = exchange(port, _head("GET", "/healthz", *extra, host=host))
    _assert_problem(reply, 400)
    assert "Host" in reply.json()["detail"]


@pytest.mark.parametrize(
    "host",
    ["example.com", "example.com:8080", "127.0.0.1:80", "[::1]:8000", "xn--bcher-kva.example"],
)
def test_a_valid_host_is_served(served: tuple[RunningService, int], host: str) -> None:
    _, port = served
    assert exchange(port, _head("GET", "/healthz", host=host)).status == 200


def test_http_1_0_may_leave_host_out(served: tuple[RunningService, int]) -> None:
    _, port = served
    reply = exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert reply.status == 200


# --- Content codings -----------------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "br", "deflate", "zstd", "identity, gzip", "x-made-up"])
def test_a_content_encoded_body_is_415_and_never_read(
    served: tuple[RunningService, int], coding: str
) -> None:
    service, _ = served
    user = UserFactory.create()
    response = httpx.post(
        f"{service.base_url}/api/tasks",
        content=b'{"title": "plain JSON, labelled otherwise"}',
        headers={**user.headers, "Content-Type": "application/json", "Content-Encoding": coding},
    )
    assert response.status_code == 415
    assert response.headers["accept-encoding"] == "identity"
    assert response.headers["content-type"] == "application/problem+json"
    assert httpx.get(f"{service.base_url}/api/tasks", headers=user.headers).json()["tasks"] == []


def test_an_identity_coded_body_is_read(served: tuple[RunningService, int]) -> None:
    service, _ = served
    user = UserFactory.create()
    response = httpx.post(
        f"{service.base_url}/api/tasks",
        json={"title": "t"},
        headers={**user.headers, "Content-Encoding": "identity"},
    )
    assert response.status_code == 201


# --- Bodies where none belong --------------------------------------------------------------------


@pytest.fixture
def a_task(
    served: tuple[RunningService, int],
) -> Iterator[tuple[httpx.Client, ApiUser, dict[str, Any]]]:
    service, _ = served
    user = UserFactory.create()
    with httpx.Client(base_url=service.base_url) as api:
        yield api, user, TaskFactory.create(api=api, owner=user)


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("PATCH", "/complete"), ("DELETE", ""), ("GET", "")],
    ids=["toggle", "delete", "get"],
)
def test_a_body_sent_where_none_belongs_is_400_and_changes_nothing(
    a_task: tuple[httpx.Client, ApiUser, dict[str, Any]], method: str, suffix: str
) -> None:
    api, user, task = a_task
    path = f"/api/tasks/{task['id']}"
    response = api.request(method, path + suffix, json={"completed": False}, headers=user.headers)
    assert response.status_code == 400
    assert response.json()["detail"] == "This operation takes no request body."
    assert api.get(path, headers=user.headers).json() == task
    listed = api.request("GET", "/api/tasks", content=b"x", headers=user.headers)
    assert listed.status_code == 400


@pytest.mark.parametrize(
    ("method", "suffix"), [("PATCH", "/complete"), ("DELETE", "")], ids=["toggle", "delete"]
)
def test_an_empty_body_is_no_body(
    a_task: tuple[httpx.Client, ApiUser, dict[str, Any]], method: str, suffix: str
) -> None:
    api, user, task = a_task
    response = api.request(
        method,
        f"/api/tasks/{task['id']}{suffix}",
        content=b"",
        headers={**user.headers, "Content-Length": "0"},
    )
    assert response.status_code == 200
