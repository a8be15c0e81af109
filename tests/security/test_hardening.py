"""Rules for every response: request ids, cache and sniffing headers, CORS only for the
configured origins, and logs that never hold a token, a secret or a task title."""

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event

from service.main import create_app
from tests.support.apps import make_settings
from tests.support.factories import ApiUser
from tests.support.live import service_process, serving
from tests.support.operations import SECURED_OPERATIONS, Operation
from tests.support.tokens import SECRET, bearer, mint

ALLOWED_ORIGIN = "https://app.example.com"


@pytest.mark.parametrize("op", SECURED_OPERATIONS, ids=str)
def test_every_response_forbids_caching_and_sniffing(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any], op: Operation
) -> None:
    for headers in (alice.headers, {}):  # a success and a 401
        response = api.request(
            op.method, op.url(alice_task["id"]), json=op.example_body, headers=headers
        )
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"


def test_a_request_id_is_generated_and_returned(api: httpx.Client, alice: ApiUser) -> None:
    first = api.get("/api/tasks", headers=alice.headers).headers["x-request-id"]
    second = api.get("/api/tasks", headers=alice.headers).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


def test_a_well_formed_client_request_id_is_echoed_in_header_and_problem(
    api: httpx.Client,
) -> None:
    response = api.get("/api/tasks", headers={"X-Request-ID": "checkout-42.retry:1"})
    assert response.status_code == 401
    assert response.headers["x-request-id"] == "checkout-42.retry:1"
    assert response.json()["request_id"] == "checkout-42.retry:1"


@pytest.mark.parametrize(
    "offered", ["x" * 65, "has space", "new\\nline", "<script>", "é", ""], ids=repr
)
def test_a_malformed_client_request_id_is_replaced(api: httpx.Client, offered: str) -> None:
    response = api.get("/healthz", headers={b"X-Request-ID": offered.encode()})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_errors_expose_no_framework_internals(api: httpx.Client, alice: ApiUser) -> None:
    for response in (
        api.post("/api/tasks", content=b"{bad", headers=alice.headers),
        api.get("/api/tasks?limit=x", headers=alice.headers),
        api.delete("/api/tasks"),
        api.get("/nowhere"),
    ):
        assert set(response.json()) <= {"type", "title", "status", "detail", "errors", "request_id"}
        for internal in ("pydantic", "starlette", "fastapi", "Traceback", "loc", "input"):
            assert internal not in response.text


@pytest.fixture(scope="module")
def cors_api(service_database_url: str) -> Iterator[httpx.Client]:
    settings = make_settings(service_database_url, cors_origins=[ALLOWED_ORIGIN])
    with serving(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        yield client


def _preflight(api: httpx.Client, origin: str, path: str = "/api/tasks") -> httpx.Response:
    return api.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_preflight_from_an_allowed_origin_is_answered(cors_api: httpx.Client) -> None:
    response = _preflight(cors_api, ALLOWED_ORIGIN)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    # Bearer tokens, not cookies: credentialed cross-origin requests are never allowed.
    assert "access-control-allow-credentials" not in response.headers


def test_preflight_from_another_origin_is_refused(cors_api: httpx.Client) -> None:
    response = _preflight(cors_api, "https://evil.example")
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["content-type"] == "application/problem+json"


def test_cross_origin_responses_expose_what_clients_need(cors_api: httpx.Client) -> None:
    response = cors_api.post(
        "/api/tasks",
        json={"title": "from the browser"},
        headers={**bearer(mint()), "Origin": ALLOWED_ORIGIN},
    )
    assert response.status_code == 201
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    exposed = response.headers["access-control-expose-headers"].lower()
    assert {"location", "x-request-id", "www-authenticate", "retry-after"} <= {
        header.strip() for header in exposed.split(",")
    }
    other = cors_api.get("/api/tasks", headers={**bearer(mint()), "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_without_cors_origins_no_cors_headers_are_sent(api: httpx.Client) -> None:
    response = _preflight(api, ALLOWED_ORIGIN)
    assert "access-control-allow-origin" not in response.headers


def test_logs_of_a_full_lifecycle_hold_no_token_secret_or_title(service_database_url: str) -> None:
    """Run the real server (its own logging setup, at info level) through a lifecycle with
    failed authentication along the way, then search everything it wrote."""
    title = "confidential-title-7f1c"
    token = mint("log-watcher")
    forged = mint("log-watcher", secret="z" * 48)
    env = {"DATABASE_URL": service_database_url, "JWT_SECRET": SECRET}
    with service_process("--no-migrate", env=env, log_level="info") as service:
        with httpx.Client(base_url=service.base_url) as client:
            client.get("/api/tasks", headers=bearer(forged))
            client.get(f"/api/tasks?access_token={token}")
            client.get("/api/tasks", headers={"Authorization": f"Basic {token}"})
            task = client.post("/api/tasks", json={"title": title}, headers=bearer(token)).json()
            url = f"/api/tasks/{task['id']}"
            client.patch(url, json={"title": title + "-2"}, headers=bearer(token))
            client.put(url, json={"title": title, "completed": True}, headers=bearer(token))
            client.patch(f"{url}/complete", headers=bearer(token))
            client.get(f"/api/tasks?limit=1&token={token}", headers=bearer(token))
            client.delete(url, headers=bearer(token))
            client.post("/api/tasks", json={"title": title, "x": 1}, headers=bearer(token))
        output = service.output()

    for secret in (token, forged, SECRET, title, token.split(".")[2]):
        assert secret not in output
    access = [json.loads(line) for line in output.splitlines() if '"tasks_api.access"' in line]
    assert len(access) >= 10
    entry = next(e for e in access if e["method"] == "PATCH" and e["status"] == 200)
    assert entry["path"] in ("/api/tasks/{id}", "/api/tasks/{id}/complete")
    assert set(entry) >= {"request_id", "method", "path", "status", "duration_ms", "user_id"}
    assert entry["user_id"] == task["user_id"]
    assert any(e["status"] == 401 and e["user_id"] is None for e in access)


def test_the_served_process_logs_json_lines_only(service_database_url: str) -> None:
    env = {"DATABASE_URL": service_database_url, "JWT_SECRET": SECRET}
    with service_process("--no-migrate", env=env, log_level="info") as service:
        httpx.get(f"{service.base_url}/healthz")
        output = service.output()
    lines = [line for line in output.splitlines() if line.startswith("{")]
    assert lines
    for line in lines:
        assert isinstance(json.loads(line), dict)


# --- Probes and HEAD ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/api/tasks", "/api/tasks/{id}", "/docs"])
def test_head_is_answered_like_get_without_a_body(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any], path: str
) -> None:
    url = path.replace("{id}", alice_task["id"])
    get = api.get(url, headers=alice.headers)
    head = api.head(url, headers=alice.headers)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == get.headers["content-length"]


def test_head_on_a_path_without_get_is_a_405_that_lists_the_methods(
    api: httpx.Client, alice: ApiUser, alice_task: dict[str, Any]
) -> None:
    response = api.head(f"/api/tasks/{alice_task['id']}/complete", headers=alice.headers)
    assert response.status_code == 405
    assert response.headers["allow"] == "PATCH"
    listing = api.post("/api/tasks/x/complete", headers=alice.headers)
    assert listing.status_code == 405
    assert "HEAD" not in listing.headers["allow"]
    assert api.delete("/api/tasks", headers=alice.headers).headers["allow"] == "GET, HEAD, POST"


def test_readiness_costs_at_most_one_database_round_trip_per_second(
    service_database_url: str,
) -> None:
    probes: list[str] = []

    def count(*args: Any) -> None:
        statement = args[2]
        if statement.strip().upper() == "SELECT 1":
            probes.append(statement)

    app = create_app(make_settings(service_database_url))
    event.listen(Engine, "before_cursor_execute", count)
    try:
        with serving(app) as url, httpx.Client(base_url=url) as client:
            started = time.monotonic()
            statuses = [client.get("/readyz").status_code for _ in range(200)]
            elapsed = time.monotonic() - started
    finally:
        event.remove(Engine, "before_cursor_execute", count)

    assert set(statuses) == {200}
    assert len(probes) <= elapsed + 1
