"""Traces (OpenTelemetry), checked against a real OTLP/HTTP receiver that decodes what the
service exports (tests/support/otlp.py):

- a request is one server span, `{method} {route template}`, whose children are the token's
  verification, the wait for a pooled connection and each statement, with the attributes of
  OpenTelemetry's semantic conventions; exactly one server span, whatever FastAPI would add;
- a caller's `traceparent` continues its trace, unless TRACING_TRUST_TRACEPARENT=false;
- a JWKS fetch is a client span under the verification, and carries the trace to the issuer;
- a 5xx marks the server span as an error; a 404 does not;
- the service answers at full speed while the receiver stalls or is down;
- each log line of a traced request carries the ids the receiver got; `--workers 2` exports
  from both workers;
- off (the default), nothing of the SDK is even imported.

What the export must never hold (tokens, titles, cursors, secrets) is in
tests/security/test_traces.py.
"""

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from service.config import ConfigError
from service.data.spans import server_attributes
from service.main import create_app
from tests.support.apps import make_settings
from tests.support.factories import UserFactory
from tests.support.keys import JWKS_AUDIENCE, JWKS_ISSUER, JwksServer, claims, new_key
from tests.support.live import free_port, service_process, serving
from tests.support.otlp import FAST_EXPORT, ExportedSpan, OtlpReceiver, otlp_receiver
from tests.support.tokens import SECRET, bearer

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def fast_export(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAST_EXPORT.items():
        monkeypatch.setenv(name, value)


@contextmanager
def traced_service(database_url: str, endpoint: str, **overrides: Any) -> Iterator[str]:
    """The app, served with tracing on, exporting to `endpoint`."""
    settings = make_settings(database_url, otel_exporter_otlp_endpoint=endpoint, **overrides)
    with serving(create_app(settings)) as url:
        yield url


@pytest.fixture
def traced(
    service_database_url: str, fast_export: None
) -> Iterator[tuple[httpx.Client, OtlpReceiver]]:
    with (
        otlp_receiver() as receiver,
        traced_service(service_database_url, receiver.endpoint) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield client, receiver


def _service_env(database_url: str, endpoint: str) -> dict[str, str]:
    """`tasks-api serve`'s environment, tracing to `endpoint`."""
    return {
        "DATABASE_URL": database_url,
        "JWT_SECRET": SECRET,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        **FAST_EXPORT,
    }


def _python(program: str, environment: dict[str, str]) -> "subprocess.CompletedProcess[str]":
    """`program` run by this interpreter in a process of its own."""
    return subprocess.run(
        [sys.executable, "-c", program],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


def _request_id() -> str:
    return uuid.uuid4().hex


def _by_name(spans: list[ExportedSpan]) -> dict[str, ExportedSpan]:
    return {span.name: span for span in spans}


def _assert_statement(span: ExportedSpan, operation: str) -> None:
    assert span.kind == "client"
    assert span.attributes["db.system.name"] == "postgresql"
    assert span.attributes["db.operation.name"] == operation
    assert span.attributes["db.collection.name"] == "tasks"
    assert span.attributes["db.namespace"]
    assert span.attributes["server.address"]
    assert "%(" in span.attributes["db.query.text"]  # placeholders, never values


@pytest.mark.parametrize(
    ("database_url", "server"),
    [
        ("postgresql://u:p@db.internal/tasks", {"server.address": "db.internal"}),
        ("postgresql://u:p@db.internal:5432/tasks", {"server.address": "db.internal"}),
        (
            "postgresql://u:p@pooler.internal:6432/tasks",
            {"server.address": "pooler.internal", "server.port": 6432},
        ),
        ("postgresql://u:p@/tasks?host=/run/postgresql", {"server.address": "/run/postgresql"}),
    ],
)
def test_a_statement_names_its_server_and_its_port_only_when_not_postgresqls_own(
    database_url: str, server: dict[str, str | int]
) -> None:
    """The conventions: server.port only when it is not the database's default port."""
    attributes = server_attributes(make_settings(database_url))
    assert attributes == {"db.system.name": "postgresql", "db.namespace": "tasks", **server}


def test_a_create_is_one_server_span_over_the_token_the_pool_and_the_statement(
    traced: tuple[httpx.Client, OtlpReceiver],
) -> None:
    client, receiver = traced
    user, request_id = UserFactory.create(), _request_id()

    answer = client.post(
        "/api/tasks",
        json={"title": "write the report"},
        headers={**user.headers, "X-Request-ID": request_id},
    )

    assert answer.status_code == 201
    server = receiver.server_span(request_id)
    assert server.name == "POST /api/tasks"
    assert server.is_root
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/api/tasks"
    assert server.attributes["http.response.status_code"] == 201
    assert server.attributes["url.scheme"] == "http"
    assert not server.error
    children = _by_name(receiver.trace(server, {"verify token", "INSERT tasks"}))
    # A wait for a connection is a span when it took a millisecond or more (a test of its own).
    assert set(children) <= {"verify token", "wait for a pooled connection", "INSERT tasks"}
    assert all(child.trace_id == server.trace_id for child in children.values())
    _assert_statement(children["INSERT tasks"], "INSERT")
    # In the order they happened, each within the request.
    verify, insert = children["verify token"], children["INSERT tasks"]
    assert server.start_ns <= verify.start_ns <= verify.end_ns <= insert.start_ns
    assert insert.end_ns <= server.end_ns
    assert server.resource["service.name"] == "secure-tasks-api"


def test_a_list_is_a_select_under_its_server_span(
    traced: tuple[httpx.Client, OtlpReceiver],
) -> None:
    client, receiver = traced
    user, request_id = UserFactory.create(), _request_id()

    answer = client.get("/api/tasks", headers={**user.headers, "X-Request-ID": request_id})

    assert answer.status_code == 200
    server = receiver.server_span(request_id)
    assert server.name == "GET /api/tasks"
    children = _by_name(receiver.trace(server, {"verify token", "SELECT tasks"}))
    _assert_statement(children["SELECT tasks"], "SELECT")


def test_a_404_names_the_route_template_never_the_id_and_is_no_error(
    traced: tuple[httpx.Client, OtlpReceiver],
) -> None:
    client, receiver = traced
    user, request_id, missing = UserFactory.create(), _request_id(), str(uuid.uuid4())

    answer = client.get(
        f"/api/tasks/{missing}", headers={**user.headers, "X-Request-ID": request_id}
    )

    assert answer.status_code == 404
    server = receiver.server_span(request_id)
    assert server.name == "GET /api/tasks/{id}"
    assert server.attributes["http.route"] == "/api/tasks/{id}"
    assert server.attributes["http.response.status_code"] == 404
    assert not server.error  # a client's error, not the server's
    spans = [server, *receiver.trace(server, {"SELECT tasks"})]
    assert all(missing not in repr(span) for span in spans)


def test_a_remembered_token_is_not_verified_again_and_has_no_span(
    traced: tuple[httpx.Client, OtlpReceiver],
) -> None:
    client, receiver = traced
    user, first, second = UserFactory.create(), _request_id(), _request_id()
    for request_id in (first, second):
        headers = {**user.headers, "X-Request-ID": request_id}
        assert client.get("/api/tasks", headers=headers).status_code == 200

    verified = _by_name(receiver.trace(receiver.server_span(first), {"SELECT tasks"}))
    remembered = _by_name(receiver.trace(receiver.server_span(second), {"SELECT tasks"}))

    assert "verify token" in verified
    assert "verify token" not in remembered


def test_a_wait_for_a_busy_connection_is_a_span_of_its_own(
    service_database_url: str, fast_export: None
) -> None:
    """One connection, eight requests at once: most wait for it, and each wait is a span."""
    user = UserFactory.create()
    with (
        otlp_receiver() as receiver,
        traced_service(service_database_url, receiver.endpoint, db_pool_size=1) as url,
        httpx.Client(base_url=url, headers=user.headers, timeout=30) as client,
        ThreadPoolExecutor(8) as pool,
    ):
        ids = [_request_id() for _ in range(40)]
        answers = pool.map(lambda i: client.get("/api/tasks", headers={"X-Request-ID": i}), ids)
        assert {answer.status_code for answer in answers} == {200}
        servers = [receiver.server_span(request_id) for request_id in ids]
        waits = [
            span
            for server in servers
            for span in receiver.trace(server, {"SELECT tasks"})
            if span.name == "wait for a pooled connection"
        ]

    assert waits
    for wait in waits:
        assert wait.kind == "internal"
        assert wait.end_ns - wait.start_ns >= 1_000_000
        assert wait.attributes == {}  # the statement after it names the server
        assert not wait.error


def test_each_request_is_exactly_one_server_span(
    service_database_url: str, fast_export: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI 0.165 would start a server span of its own (with the query string) once a
    tracer provider is set globally, and add OTLP export of its own when told to by the
    environment: neither happens."""
    monkeypatch.setenv("FASTAPI_OTEL_AUTO_CONFIGURE", "true")
    user = UserFactory.create()
    with (
        otlp_receiver() as receiver,
        traced_service(service_database_url, receiver.endpoint) as url,
    ):
        ids = [_request_id() for _ in range(5)]
        for request_id in ids:
            headers = {**user.headers, "X-Request-ID": request_id}
            assert httpx.get(f"{url}/api/tasks?limit=5", headers=headers).status_code == 200
        for request_id in ids:
            receiver.server_span(request_id)
        time.sleep(0.5)  # anything else that was going to arrive has
        servers = [s for s in receiver.received() if s.kind == "server"]
        assert len(servers) == len(ids)
        assert {s.attributes["tasks_api.request_id"] for s in servers} == set(ids)
        assert not any(s.name.startswith("fastapi.") for s in receiver.received())


def test_a_callers_traceparent_continues_its_trace(
    traced: tuple[httpx.Client, OtlpReceiver],
) -> None:
    client, receiver = traced
    user, request_id = UserFactory.create(), _request_id()
    headers = {
        **user.headers,
        "X-Request-ID": request_id,
        "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
        "tracestate": "vendor=opaque",
    }

    assert client.get("/api/tasks", headers=headers).status_code == 200

    server = receiver.server_span(request_id)
    assert (server.trace_id, server.parent_span_id) == (CALLER_TRACE, CALLER_SPAN)
    assert all(c.trace_id == CALLER_TRACE for c in receiver.trace(server, {"SELECT tasks"}))


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # an invalid trace id
        "not a traceparent",
        f"00-{CALLER_TRACE}-{CALLER_SPAN}",  # no flags
    ],
)
def test_a_malformed_traceparent_starts_a_trace_of_its_own(
    traced: tuple[httpx.Client, OtlpReceiver], traceparent: str
) -> None:
    client, receiver = traced
    user, request_id = UserFactory.create(), _request_id()
    headers = {**user.headers, "X-Request-ID": request_id, "traceparent": traceparent}

    assert client.get("/api/tasks", headers=headers).status_code == 200

    server = receiver.server_span(request_id)
    assert server.is_root
    assert server.trace_id not in (CALLER_TRACE, "0" * 32)


def test_at_an_untrusted_edge_the_service_starts_its_own_trace_linked_to_the_callers(
    service_database_url: str, fast_export: None
) -> None:
    user, request_id = UserFactory.create(), _request_id()
    headers = {
        **user.headers,
        "X-Request-ID": request_id,
        # Sampled=0: a caller that could decide sampling could switch tracing off.
        "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-00",
    }
    with (
        otlp_receiver() as receiver,
        traced_service(
            service_database_url, receiver.endpoint, tracing_trust_traceparent=False
        ) as url,
    ):
        assert httpx.get(f"{url}/api/tasks", headers=headers).status_code == 200

        server = receiver.server_span(request_id)

    assert server.is_root
    assert server.trace_id != CALLER_TRACE
    assert server.links == [(CALLER_TRACE, CALLER_SPAN)]


def test_a_jwks_fetch_is_a_client_span_under_the_verification_and_carries_the_trace(
    service_database_url: str, fast_export: None
) -> None:
    key = new_key("ES256")
    request_id = _request_id()
    with (
        JwksServer().running() as jwks,
        otlp_receiver() as receiver,
        traced_service(
            service_database_url,
            receiver.endpoint,
            jwt_jwks_url=jwks.url,
            jwt_issuer=JWKS_ISSUER,
            jwt_audience=JWKS_AUDIENCE,
        ) as url,
    ):
        jwks.publish(key)
        token = key.sign(claims())
        headers = {**bearer(token), "X-Request-ID": request_id}
        assert httpx.get(f"{url}/api/tasks", headers=headers).status_code == 200

        server = receiver.server_span(request_id)
        verify = _by_name(receiver.trace(server, {"verify token"}))["verify token"]
        [fetch] = receiver.trace(verify, {"GET"})

    assert fetch.name == "GET"
    assert fetch.kind == "client"
    assert fetch.attributes["http.request.method"] == "GET"
    assert fetch.attributes["url.full"] == jwks.url
    assert fetch.attributes["http.response.status_code"] == 200
    sent = jwks.request_headers[-1]["traceparent"]
    assert sent.split("-")[1:3] == [fetch.trace_id, fetch.span_id]


def test_a_5xx_marks_the_server_span_and_the_failed_step_as_errors(
    fast_export: None,
) -> None:
    """The database does not answer (nothing listens where DATABASE_URL points): a 503."""
    unreachable = f"postgresql://tasks@127.0.0.1:{free_port()}/tasks"
    user, request_id = UserFactory.create(), _request_id()
    with (
        otlp_receiver() as receiver,
        traced_service(
            unreachable,
            receiver.endpoint,
            db_pool_timeout_seconds=0.5,
            db_connect_timeout_seconds=1,
        ) as url,
    ):
        headers = {**user.headers, "X-Request-ID": request_id}
        assert httpx.get(f"{url}/api/tasks", headers=headers, timeout=30).status_code == 503

        server = receiver.server_span(request_id)
        children = _by_name(receiver.trace(server, {"wait for a pooled connection"}))

    assert server.error
    assert server.attributes["error.type"] == "503"
    wait = children["wait for a pooled connection"]
    assert wait.error
    assert wait.attributes["error.type"]


@pytest.mark.parametrize("collector", ["stalled", "down"])
def test_the_service_answers_at_full_speed_whatever_the_collector_does(
    service_database_url: str, fast_export: None, collector: str
) -> None:
    user = UserFactory.create()

    def timed_requests(url: str) -> float:
        started = time.perf_counter()
        with httpx.Client(base_url=url, headers=user.headers, timeout=30) as client:
            for _ in range(150):
                assert client.get("/api/tasks").status_code == 200
        return time.perf_counter() - started

    with (
        otlp_receiver() as healthy,
        traced_service(service_database_url, healthy.endpoint) as url,
    ):
        timed_requests(url)  # warm
        usual = timed_requests(url)
    with otlp_receiver(mode="stall") as stalled:
        endpoint = stalled.endpoint if collector == "stalled" else f"http://127.0.0.1:{free_port()}"
        with traced_service(service_database_url, endpoint) as url:
            timed_requests(url)
            troubled = timed_requests(url)

    # Exports leave from the batch processor's thread; a request never waits for one.
    assert troubled < usual * 1.6 + 0.5, (usual, troubled)


def test_a_stalled_collector_does_not_hold_the_service_at_shutdown(
    service_database_url: str,
) -> None:
    """Spans still queued are sent at shutdown, for a few seconds at most: a collector that
    never answers does not keep the worker from exiting (the SDK alone would wait 30 s)."""
    user = UserFactory.create()
    with otlp_receiver(mode="stall") as stalled:
        env = _service_env(service_database_url, stalled.endpoint)
        with service_process("--no-migrate", env=env) as service:
            for _ in range(20):
                assert httpx.get(f"{service.base_url}/api/tasks", headers=user.headers).is_success
            time.sleep(0.3)  # the first export is under way, and stalled
            started = time.monotonic()
            service.process.terminate()
            service.process.wait(timeout=30)
            stopped_within = time.monotonic() - started

    assert service.process.returncode == 0
    assert stopped_within < 10, stopped_within


def test_each_log_line_of_a_traced_request_carries_the_ids_the_collector_got(
    service_database_url: str,
) -> None:
    user = UserFactory.create()
    with otlp_receiver() as receiver:
        env = _service_env(service_database_url, receiver.endpoint)
        with service_process("--no-migrate", env=env, log_level="info") as service:
            ids = [_request_id() for _ in range(3)]
            for request_id in ids:
                headers = {**user.headers, "X-Request-ID": request_id}
                assert httpx.get(f"{service.base_url}/api/tasks", headers=headers).is_success
            servers = {request_id: receiver.server_span(request_id) for request_id in ids}
            logged = service.json_lines()

    access = {
        line["request_id"]: line
        for line in logged
        if line.get("logger") == "tasks_api.access" and line.get("request_id") in servers
    }
    assert set(access) == set(ids)
    for request_id, line in access.items():
        assert (line["trace_id"], line["span_id"]) == (
            servers[request_id].trace_id,
            servers[request_id].span_id,
        )


def _listed(spans: list[ExportedSpan]) -> list[ExportedSpan]:
    return [s for s in spans if s.kind == "server" and s.name == "GET /api/tasks"]


def test_two_workers_each_export_their_own_spans(service_database_url: str) -> None:
    user = UserFactory.create()
    with otlp_receiver() as receiver:
        env = _service_env(service_database_url, receiver.endpoint)
        with service_process("--no-migrate", "--workers", "2", env=env) as service:

            def one() -> int:
                # A connection each, so the kernel spreads them over both workers.
                with httpx.Client(headers=user.headers, timeout=30) as client:
                    return client.get(f"{service.base_url}/api/tasks").status_code

            with ThreadPoolExecutor(8) as pool:
                assert set(pool.map(lambda _: one(), range(120))) == {200}
            # The start-up probe's `GET /healthz` is a server span too: count only ours.
            spans = receiver.wait_for(lambda spans: len(_listed(spans)) >= 120)

    servers = _listed(spans)
    assert len(servers) == 120
    assert len({s.resource["service.instance.id"] for s in servers}) == 2
    assert len({s.resource["process.pid"] for s in servers}) == 2


def test_off_by_default_nothing_of_the_sdk_is_even_imported(service_database_url: str) -> None:
    program = f"""
import sys
import httpx
from service.main import create_app
from tests.support.apps import make_settings
from tests.support.factories import UserFactory
app = create_app(make_settings({service_database_url!r}))
async def main():
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answer = await client.get("/api/tasks", headers=UserFactory.create().headers)
            assert answer.status_code == 200, answer.text
import asyncio
asyncio.run(main())
prefixes = ("opentelemetry.sdk", "opentelemetry.exporter")
loaded = sorted(m for m in sys.modules if m.startswith(prefixes))
print(",".join(loaded) or "none")
"""
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FASTAPI_OTEL"))
    }
    done = _python(program, environment)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("otel_exporter_otlp_protocol", "grpc"),
        ("otel_exporter_otlp_traces_protocol", "http/json"),
        ("otel_traces_exporter", "zipkin"),
    ],
)
def test_tracing_asked_for_in_a_way_it_cannot_export_refuses_to_start(
    service_database_url: str, variable: str, value: str
) -> None:
    settings = make_settings(
        service_database_url,
        otel_exporter_otlp_endpoint="http://127.0.0.1:4318",
        **{variable: value},
    )
    with pytest.raises(ConfigError, match=value):
        settings.check()


def test_otel_sdk_disabled_or_exporter_none_turns_tracing_off(service_database_url: str) -> None:
    on = make_settings(service_database_url, otel_exporter_otlp_endpoint="http://collector:4318/")
    assert on.traces_endpoint() == "http://collector:4318/v1/traces"
    signal_own = make_settings(
        service_database_url, otel_exporter_otlp_traces_endpoint="http://collector:4318/x"
    )
    assert signal_own.traces_endpoint() == "http://collector:4318/x"
    for off in ({"otel_sdk_disabled": True}, {"otel_traces_exporter": "none"}):
        settings = make_settings(
            service_database_url, otel_exporter_otlp_endpoint="http://collector:4318", **off
        )
        assert settings.traces_endpoint() is None
    assert make_settings(service_database_url).traces_endpoint() is None


def test_otel_variables_in_dotenv_reach_the_sdk(
    service_database_url: str,
    fast_export: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    """`.env` works for OpenTelemetry's variables as for every other setting, though the SDK
    itself reads only the process environment."""
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.setenv(name, "restored after the test")
        monkeypatch.delenv(name)
    user, request_id = UserFactory.create(), _request_id()
    with otlp_receiver() as receiver:
        (tmp_path / ".env").write_text(
            f"OTEL_EXPORTER_OTLP_ENDPOINT={receiver.endpoint}\n"
            "OTEL_SERVICE_NAME=tasks-from-dotenv\n"
            "OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=test\n"
        )
        monkeypatch.chdir(tmp_path)
        with serving(create_app(make_settings(service_database_url))) as url:
            headers = {**user.headers, "X-Request-ID": request_id}
            assert httpx.get(f"{url}/api/tasks", headers=headers).status_code == 200
            server = receiver.server_span(request_id)

    assert server.resource["service.name"] == "tasks-from-dotenv"
    assert server.resource["deployment.environment.name"] == "test"


def test_a_global_tracer_provider_does_not_wake_fastapis_own_tracing(
    service_database_url: str,
) -> None:
    """Another library (or `opentelemetry-instrument`) may set a global tracer provider, which
    is what switches FastAPI 0.165's tracing on: the request is still one server span, ours,
    and the global provider records nothing (in a process of its own: a global provider can
    be set only once)."""
    program = f"""
import asyncio
import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from service.main import create_app
from tests.support.apps import make_settings
from tests.support.factories import UserFactory
from tests.support.otlp import otlp_receiver

elsewhere = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(elsewhere))
trace.set_tracer_provider(provider)

async def main(endpoint):
    app = create_app(make_settings({service_database_url!r}, otel_exporter_otlp_endpoint=endpoint))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answer = await client.get("/api/tasks?limit=3", headers=UserFactory.create().headers)
            assert answer.status_code == 200, answer.text

with otlp_receiver() as receiver:
    asyncio.run(main(receiver.endpoint))  # the lifespan's end exports what is queued
    servers = [s for s in receiver.received() if s.kind == "server"]
print(len(servers), len(elsewhere.get_finished_spans()), servers[0].name)
"""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = _python(program, environment)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "0", "GET", "/api/tasks"]
