"""Under pressure: a database that stops answering, more requests than connections, a query
past statement_timeout, and SIGTERM in the middle of the load. Never a hang, never a 500,
never a request cut off."""

import selectors
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, create_engine, text

from service.main import create_app
from tests.support.apps import make_settings
from tests.support.databases import SERVICE_CONNECTIONS, as_service, fresh_database_on, service_env
from tests.support.factories import ApiUser, TaskFactory
from tests.support.live import RunningService, service_process, serving
from tests.support.pooler import pgbouncer
from tests.support.proxy import StallingProxy
from tests.support.tokens import SECRET, bearer, mint


def _timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"].isdigit()


@contextmanager
def served_on_a_freezable_database(
    database_url: str, route: str
) -> Iterator[tuple[StallingProxy, RunningService]]:
    """`tasks-api serve`, and a proxy that can freeze the database as the service sees it: in
    front of PostgreSQL, or in front of PgBouncer (transaction mode), as a network path to
    Neon's pooled endpoint that stops answering.

    Not PgBouncer in front of a frozen PostgreSQL: PgBouncer 1.18 (Debian's) crashes when a
    client gives up on a cancel request it could not forward (pgbouncer/pgbouncer#801, fixed
    in 1.20), and the service's statement deadline sends exactly such cancels.
    """
    with ExitStack() as stack:
        target = as_service(database_url)
        if route == "pgbouncer":
            target = stack.enter_context(pgbouncer(target))
        proxy = stack.enter_context(StallingProxy(target).running())
        env = {"DATABASE_URL": proxy.url.render_as_string(hide_password=False)}
        service = stack.enter_context(
            service_process("--no-migrate", env=env | {"JWT_SECRET": SECRET})
        )
        yield proxy, service


@pytest.mark.both_routes
def test_a_database_that_stops_answering_is_503_within_5_seconds_then_recovers(
    database_url: str, route: str
) -> None:
    headers = bearer(mint())
    with (
        served_on_a_freezable_database(database_url, route) as (proxy, service),
        httpx.Client(base_url=service.base_url, timeout=30) as api,
    ):
        task = api.post("/api/tasks", json={"title": "kept"}, headers=headers).json()

        proxy.stall()
        for path in ("/api/tasks", f"/api/tasks/{task['id']}", "/readyz", "/api/tasks"):
            response, took = _timed(lambda path=path: api.get(path, headers=headers))
            assert_unavailable(response)
            assert took < 5
        assert api.get("/healthz").status_code == 200

        proxy.resume()
        deadline = time.monotonic() + 15
        while api.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "did not recover"
            time.sleep(0.2)
        listed = api.get("/api/tasks", headers=headers).json()["tasks"]
        assert [t["id"] for t in listed] == [task["id"]]
        assert service.process.poll() is None


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    took: float


def _burst(base_url: str, requests: list[tuple[str, str]], headers: dict[str, str]) -> list[Answer]:
    """Send every request at once, each on its own connection, and time each answer from the
    moment its request was sent (connections are opened first, so only the service's time
    counts, not the test's)."""
    host, port = base_url.removeprefix("http://").split(":")
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    sockets = [socket.create_connection((host, int(port))) for _ in requests]
    sent: dict[socket.socket, float] = {}
    received: dict[socket.socket, bytes] = dict.fromkeys(sockets, b"")
    answers: list[Answer] = []
    with selectors.DefaultSelector() as selector:
        for sock, (method, path) in zip(sockets, requests, strict=True):
            sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
            sent[sock] = time.monotonic()
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + 30
        while len(answers) < len(requests) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                received[ready] += ready.recv(65536)
                head, separator, body = received[ready].partition(b"\r\n\r\n")
                if not separator:
                    continue
                status_line, *lines = head.decode("latin-1").split("\r\n")
                fields = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
                if len(body) >= int(fields.get("content-length", "0")):
                    answers.append(
                        Answer(int(status_line.split()[1]), fields, time.monotonic() - sent[ready])
                    )
                    selector.unregister(ready)
    for sock in sockets:
        sock.close()
    return answers


@pytest.mark.both_routes
def test_200_concurrent_requests_against_a_frozen_database_all_get_503_within_5_seconds(
    database_url: str, route: str
) -> None:
    headers = bearer(mint())
    with served_on_a_freezable_database(database_url, route) as (proxy, service):
        task = httpx.post(
            f"{service.base_url}/api/tasks", json={"title": "kept"}, headers=headers
        ).json()
        operations = [
            ("GET", "/api/tasks"),
            ("GET", f"/api/tasks/{task['id']}"),
            ("PATCH", f"/api/tasks/{task['id']}/complete"),
            ("GET", "/readyz"),
        ]
        proxy.stall()
        answers = _burst(service.base_url, operations * 50, headers)

        proxy.resume()
        resumed = time.monotonic()
        while httpx.get(f"{service.base_url}/api/tasks", headers=headers).status_code != 200:
            assert time.monotonic() - resumed < 1, "did not recover within a second"
            time.sleep(0.05)

    assert len(answers) == 200
    for answer in answers:
        assert answer.status == 503
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["retry-after"].isdigit()
        assert answer.took < 5


@pytest.fixture
def locked_task(
    database_url: str, alice: ApiUser, api: httpx.Client
) -> Iterator[tuple[dict[str, Any], Connection]]:
    """Alice's task, with its row locked by another session until the test lets go."""
    task = TaskFactory.create(api=api, owner=alice)
    engine = create_engine(database_url)
    connection = engine.connect()
    connection.execute(text("SELECT 1 FROM tasks WHERE id = :id FOR UPDATE"), {"id": task["id"]})
    try:
        yield task, connection
    finally:
        connection.rollback()
        connection.close()
        engine.dispose()


def test_a_full_pool_and_a_statement_past_its_timeout_are_503_not_hangs(
    database_url: str, alice: ApiUser, locked_task: tuple[dict[str, Any], Connection]
) -> None:
    task, _ = locked_task
    settings = make_settings(
        as_service(database_url),
        db_pool_size=1,
        db_pool_timeout_seconds=0.5,
        db_statement_timeout_ms=1500,
    )
    with serving(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as api:
        with ThreadPoolExecutor(max_workers=1) as pool:
            # Waits on the row lock while holding the pool's only connection.
            blocked = pool.submit(
                _timed,
                lambda: api.patch(f"/api/tasks/{task['id']}/complete", headers=alice.headers),
            )
            time.sleep(0.3)
            queued, queued_took = _timed(lambda: api.get("/api/tasks", headers=alice.headers))
            toggled, toggled_took = blocked.result()

        assert_unavailable(queued)  # waited for a connection, then gave up
        assert queued_took < 1.5
        assert_unavailable(toggled)  # cancelled by statement_timeout
        assert 1.4 < toggled_took < 5
        assert api.get("/api/tasks", headers=alice.headers).status_code == 200


def test_sigterm_lets_in_flight_requests_finish_and_closes_the_pool(database_url: str) -> None:
    headers = bearer(mint())
    with fresh_database_on(database_url) as own:
        url = own.render_as_string(hide_password=False)
        env = {**service_env(url), "JWT_SECRET": SECRET}
        with service_process(env=env) as service:
            task = httpx.post(
                f"{service.base_url}/api/tasks", json={"title": "t"}, headers=headers
            ).json()
            engine = create_engine(url)
            with engine.connect() as lock:
                lock.execute(
                    text("SELECT 1 FROM tasks WHERE id = :id FOR UPDATE"), {"id": task["id"]}
                )
                toggle = f"{service.base_url}/api/tasks/{task['id']}/complete"
                with ThreadPoolExecutor(max_workers=8) as pool:
                    in_flight = [
                        pool.submit(httpx.patch, toggle, headers=headers, timeout=30)
                        for _ in range(8)
                    ]
                    time.sleep(0.5)  # all eight are now waiting on the lock, inside the server
                    service.process.send_signal(signal.SIGTERM)
                    threading.Timer(0.5, lock.rollback).start()
                    responses = [future.result() for future in in_flight]
            exit_code = service.process.wait(timeout=30)
            with engine.connect() as check:
                left = check.execute(text(f"SELECT count(*) {SERVICE_CONNECTIONS}")).scalar_one()
            engine.dispose()

    assert [response.status_code for response in responses] == [200] * 8
    assert exit_code in (0, -signal.SIGTERM)
    assert left == 0
