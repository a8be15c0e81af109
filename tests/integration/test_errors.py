"""Errors: one RFC 9457 shape for all of them, the right status, and checks in the right order.

Order: unknown route 404, wrong method 405, body over 64 KiB 413, authentication 401, body and
query 400 (415 for a body that is not JSON), task lookup 404.
"""

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from service.http.context import context_of
from service.main import create_app
from tests.support.factories import ApiUser
from tests.support.live import serving

PROBLEM_FIELDS = {"type", "title", "status", "detail"}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert set(body) >= PROBLEM_FIELDS
    assert body["status"] == status
    assert body["type"] == "about:blank"
    return body


INVALID_BODIES: list[tuple[str, str, bytes, str]] = [
    # (case, method, raw body, pointer of the reported error)
    ("malformed JSON", "POST", b'{"title": ', ""),
    ("JSON array", "POST", b'["title"]', "#"),
    ("JSON string", "POST", b'"title"', "#"),
    ("empty object", "POST", b"{}", "#/title"),
    ("title is a number", "POST", b'{"title": 5}', "#/title"),
    ("title is null", "POST", b'{"title": null}', "#/title"),
    ("title is empty", "POST", b'{"title": ""}', "#/title"),
    ("title is only whitespace", "POST", b'{"title": " \\t\\n\\u3000 "}', "#/title"),
    ("title over 500 characters", "POST", b'{"title": "' + b"x" * 501 + b'"}', "#/title"),
    ("title with NUL", "POST", b'{"title": "a\\u0000b"}', "#/title"),
    ("title with a lone surrogate", "POST", b'{"title": "\\ud800"}', ""),
    ("title with a line break inside", "POST", b'{"title": "two\\nlines"}', "#/title"),
    ("title with an ANSI escape", "POST", b'{"title": "\\u001b[2J gone"}', "#/title"),
    ("title with a C1 control", "PUT", b'{"title": "a\\u0085b", "completed": true}', "#/title"),
    ("title with a bidi override", "POST", b'{"title": "abc\\u202edcb"}', "#/title"),
    ("title with a bidi isolate", "PATCH", b'{"title": "a\\u2067b"}', "#/title"),
    ("title with a noncharacter", "POST", b'{"title": "a\\uffffb"}', "#/title"),
    ("unknown field", "POST", b'{"title": "t", "priority": 1}', "#/priority"),
    ("replace without completed", "PUT", b'{"title": "t"}', "#/completed"),
    ("replace without title", "PUT", b'{"completed": true}', "#/title"),
    ("completed as a string", "PUT", b'{"title": "t", "completed": "true"}', "#/completed"),
    ("completed as a number", "PATCH", b'{"completed": 1}', "#/completed"),
    ("update with nothing to change", "PATCH", b"{}", "#"),
    ("update with null title", "PATCH", b'{"title": null}', "#/title"),
    ("update with null completed", "PATCH", b'{"completed": null}', "#/completed"),
]


@pytest.mark.parametrize(
    ("method", "raw", "pointer"),
    [case[1:] for case in INVALID_BODIES],
    ids=[case[0] for case in INVALID_BODIES],
)
def test_invalid_bodies_are_400_with_the_bad_field_named(
    api: httpx.Client,
    alice: ApiUser,
    alice_task: dict[str, Any],
    method: str,
    raw: bytes,
    pointer: str,
) -> None:
    url = "/api/tasks" if method == "POST" else f"/api/tasks/{alice_task['id']}"
    headers = {**alice.headers, "Content-Type": "application/json"}

    body = assert_problem(api.request(method, url, content=raw, headers=headers), 400)

    if pointer:
        assert pointer in [error["pointer"] for error in body["errors"]]
    assert api.get(f"/api/tasks/{alice_task['id']}", headers=alice.headers).json() == alice_task


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_a_missing_body_is_400(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any], method: str
) -> None:
    url = "/api/tasks" if method == "POST" else f"/api/tasks/{alice_task['id']}"
    body = assert_problem(api.request(method, url, headers=alice.headers), 400)
    assert body["detail"] == "A JSON request body is required."


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", None],
)
def test_a_body_that_is_not_json_is_415(
    api: httpx.Client, alice: ApiUser, content_type: str | None
) -> None:
    headers = dict(alice.headers)
    if content_type:
        headers["Content-Type"] = content_type
    response = api.post("/api/tasks", content=b'{"title": "t"}', headers=headers)
    assert_problem(response, 415)


def test_json_with_a_charset_parameter_is_accepted(api: httpx.Client, alice: ApiUser) -> None:
    headers = {**alice.headers, "Content-Type": "application/json; charset=utf-8"}
    response = api.post("/api/tasks", content=b'{"title": "t"}', headers=headers)
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=-1", "limit"),
        ("limit=1.5", "limit"),
        ("limit=ten", "limit"),
        ("limit=", "limit"),
        ("limit=5&limit=6", "limit"),
        ("completed=yes", "completed"),
        ("completed=1", "completed"),
        ("completed=True", "completed"),
        ("cursor=", "cursor"),
    ],
)
def test_invalid_query_parameters_are_400(
    api: httpx.Client, alice: ApiUser, query: str, parameter: str
) -> None:
    body = assert_problem(api.get(f"/api/tasks?{query}", headers=alice.headers), 400)
    assert [error["parameter"] for error in body["errors"]] == [parameter]


def test_every_bad_query_parameter_is_reported(api: httpx.Client, alice: ApiUser) -> None:
    response = api.get("/api/tasks?limit=0&completed=maybe", headers=alice.headers)
    body = assert_problem(response, 400)
    assert {error["parameter"] for error in body["errors"]} == {"limit", "completed"}


@pytest.mark.parametrize("path", ["/nope", "/api", "/api/tasks/", "/api/tasks/1/2", "/api/task"])
def test_unknown_routes_are_404_problems_even_without_a_token(api: httpx.Client, path: str) -> None:
    assert_problem(api.get(path), 404)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        # HEAD is answered wherever GET is (RFC 9110 section 9.3.2).
        ("DELETE", "/api/tasks", "GET, HEAD, POST"),
        ("PUT", "/api/tasks", "GET, HEAD, POST"),
        (
            "POST",
            "/api/tasks/0b7b2ee4-7b44-4bfc-9a4f-46a6c4f3bbd1",
            "DELETE, GET, HEAD, PATCH, PUT",
        ),
        ("GET", "/api/tasks/0b7b2ee4-7b44-4bfc-9a4f-46a6c4f3bbd1/complete", "PATCH"),
        ("POST", "/healthz", "GET, HEAD"),
    ],
)
def test_wrong_method_is_405_listing_every_method_of_the_path(
    api: httpx.Client, method: str, path: str, allow: str
) -> None:
    # No token: 405 comes before authentication.
    response = api.request(method, path)
    assert_problem(response, 405)
    assert response.headers["allow"] == allow


def test_a_body_over_64_kib_is_413_before_authentication(api: httpx.Client) -> None:
    big = b'{"title": "' + b"x" * (64 * 1024) + b'"}'
    response = api.post("/api/tasks", content=big, headers={"Content-Type": "application/json"})
    assert_problem(response, 413)


def test_a_streamed_body_over_64_kib_is_413(api: httpx.Client, alice: ApiUser) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"title": "'
        for _ in range(80):
            yield b"x" * 1024
        yield b'"}'

    headers = {**alice.headers, "Content-Type": "application/json"}
    response = api.post("/api/tasks", content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers  # sent chunked
    assert_problem(response, 413)


def test_a_body_of_exactly_64_kib_is_accepted_for_judging(
    api: httpx.Client, alice: ApiUser
) -> None:
    padding = 64 * 1024 - len(b'{"title": "t"}')
    body = b'{"title": "t"' + b" " * padding + b"}"
    assert len(body) == 64 * 1024
    headers = {**alice.headers, "Content-Type": "application/json"}
    assert api.post("/api/tasks", content=body, headers=headers).status_code == 201


def test_validation_comes_before_the_task_lookup(api: httpx.Client, alice: ApiUser) -> None:
    response = api.put("/api/tasks/not-a-uuid", json={"title": ""}, headers=alice.headers)
    assert_problem(response, 400)


def test_missing_task_is_404_problem(api: httpx.Client, alice: ApiUser) -> None:
    body = assert_problem(
        api.get("/api/tasks/0b7b2ee4-7b44-4bfc-9a4f-46a6c4f3bbd1", headers=alice.headers), 404
    )
    assert body["detail"] == "Task not found."


@pytest.fixture(scope="module")
def failing_api(settings: Any) -> Iterator[httpx.Client]:
    """The real app plus one route that fails the way a bug would."""
    app: FastAPI = create_app(settings)

    def explode() -> None:
        raise RuntimeError("SELECT secret FROM internals -- password=hunter2")

    async def bad_sql(request: Request) -> None:
        database = context_of(request).app.database.for_request(time.monotonic(), None)
        await database.first("SELECT no_such_column FROM tasks")

    def typed(count: int) -> dict[str, int]:
        return {"count": count}

    app.add_api_route("/explode", explode)
    app.add_api_route("/bad-sql", bad_sql)
    app.add_api_route("/typed", typed)
    with serving(app) as url, httpx.Client(base_url=url) as client:
        yield client


@pytest.mark.parametrize("path", ["/explode", "/bad-sql"])
def test_an_unexpected_error_is_a_bare_500_problem(failing_api: httpx.Client, path: str) -> None:
    response = failing_api.get(path)
    body = assert_problem(response, 500)
    assert body["detail"] == "The server could not complete the request."
    for leak in ("SELECT", "no_such_column", "hunter2", "RuntimeError", "Traceback", "psycopg"):
        assert leak not in response.text


def test_fastapis_own_validation_is_a_400_problem_not_422(failing_api: httpx.Client) -> None:
    body = assert_problem(failing_api.get("/typed?count=many"), 400)
    assert body["errors"]
