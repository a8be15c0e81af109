"""Rule: traces never carry what a user or the service must keep to itself.

With tracing on, the service exports spans to a collector, often another team's or a vendor's.
Whatever a request carries, no span name, attribute, event or link holds a bearer token (or
a part of one), a task's title, a pagination cursor, the query string, an Idempotency-Key,
the service's secrets or the database's password. What is checked here is every byte the
collector received, decoded or not (the OTLP/HTTP receiver is a real one: tests/support/otlp.py).
"""

import base64
import uuid
from urllib.parse import urlsplit

import httpx
import pytest

from service.main import create_app
from tests.support.apps import make_settings
from tests.support.factories import UserFactory
from tests.support.live import serving
from tests.support.otlp import FAST_EXPORT, otlp_receiver
from tests.support.tokens import SECRET, bearer, mint

CURSOR_SECRET = "cursor-secret-of-the-tests-" + "c" * 32


def test_no_token_title_cursor_query_key_or_secret_ever_reaches_the_collector(
    service_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in FAST_EXPORT.items():
        monkeypatch.setenv(name, value)
    user = UserFactory.create()
    title = f"confidential-title-{uuid.uuid4().hex}"
    key = f"idempotency-{uuid.uuid4().hex}"
    query_marker = f"query-marker-{uuid.uuid4().hex}"
    forged = mint(secret="another-issuers-secret-" + "f" * 32)
    with otlp_receiver() as receiver:
        settings = make_settings(
            service_database_url,
            otel_exporter_otlp_endpoint=receiver.endpoint,
            cursor_secret=CURSOR_SECRET,
        )
        with (
            serving(create_app(settings)) as url,
            httpx.Client(base_url=url, headers=user.headers, timeout=30) as api,
        ):
            created = api.post(
                "/api/tasks", json={"title": f"{title}-0"}, headers={"Idempotency-Key": key}
            )
            for n in (1, 2):
                assert api.post("/api/tasks", json={"title": f"{title}-{n}"}).is_success
            assert created.status_code == 201
            task_id = created.json()["id"]
            assert api.patch(f"/api/tasks/{task_id}", json={"title": title}).status_code == 200
            page = api.get("/api/tasks", params={"limit": 1})
            cursor = page.json()["next_cursor"]
            assert cursor
            assert api.get("/api/tasks", params={"limit": 1, "cursor": cursor}).is_success
            # A token put in the query by mistake, and a made-up parameter: a 400 either way.
            assert api.get(f"/api/tasks?access_token={user.token}&{query_marker}=1").status_code
            # A forged token, and a title refused as too long: what a refusal says stays out
            # of spans too.
            assert api.get("/api/tasks", headers=bearer(forged)).status_code == 401
            too_long = api.post("/api/tasks", json={"title": title * 20})
            assert too_long.status_code == 400
            ids = [api.get("/api/tasks").headers["X-Request-ID"] for _ in range(2)]
            for request_id in ids:
                receiver.server_span(request_id)

    exported = b"".join(receiver.bodies)
    spans = receiver.received()
    assert len([s for s in spans if s.kind == "server"]) >= 10
    database_password = urlsplit(service_database_url).password
    never = {
        "the bearer token": user.token,
        "the token's signature": user.token.rsplit(".", 1)[1],
        "the token's payload": user.token.split(".")[1],
        "the forged token": forged,
        "a title": title,
        "a cursor": cursor,
        "the query string": query_marker,
        "the Idempotency-Key": key,
        "the JWT secret": SECRET,
        "the cursor secret": CURSOR_SECRET,
        "the word Bearer": "Bearer",
    }
    if database_password:
        never["the database password"] = database_password
    for what, value in never.items():
        assert value.encode() not in exported, f"{what} was exported"
        assert base64.b64encode(value.encode()) not in exported, f"{what} was exported (base64)"
    recorded = {name for span in spans for name in span.attributes}
    assert not {"url.query", "url.full", "url.path"} & {
        name for span in spans if span.kind == "server" for name in span.attributes
    }
    assert not [name for name in recorded if name.startswith("http.request.header")]
    assert all("exception" not in name for name in recorded)
