"""How a request executes: no thread per request, a connection held only while its statement
runs, and a unit of work for operations that need more than one statement."""

import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import anyio.to_thread
import httpx
import psycopg
import pytest
from sqlalchemy import Engine, text

from service.data.access import Database
from service.data.pool import ServiceConnection
from service.main import create_app
from tests.support.apps import make_settings
from tests.support.factories import TaskFactory, UserFactory
from tests.support.live import serving
from tests.support.statements import Sent, recorded_statements

pytestmark = pytest.mark.both_routes


def _worker_threads() -> set[str]:
    # anyio's thread pool (FastAPI's sync handlers and dependencies) and asyncio's default
    # executor name their threads so.
    return {
        thread.name
        for thread in threading.enumerate()
        if thread.name.startswith(("AnyIO worker thread", "asyncio_"))
    }


def test_no_api_request_or_readiness_check_enters_a_thread_pool(
    service_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered: list[Callable[..., Any]] = []

    async def refuse(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        entered.append(function)
        raise RuntimeError("a request entered the thread pool")

    # Everything FastAPI and Starlette run in a thread goes through anyio.to_thread.run_sync.
    monkeypatch.setattr(anyio.to_thread, "run_sync", refuse)
    threads_before = _worker_threads()
    alice, bob = UserFactory.create(), UserFactory.create()
    app = create_app(make_settings(service_database_url))
    with serving(app) as url, httpx.Client(base_url=url) as api:
        task = TaskFactory.create(api=api, owner=alice)
        path = f"/api/tasks/{task['id']}"
        statuses = [
            api.get("/readyz").status_code,
            api.get("/healthz").status_code,
            api.get("/api/tasks", headers=alice.headers).status_code,
            api.get(path, headers=alice.headers).status_code,
            api.put(
                path, json={"title": "t", "completed": True}, headers=alice.headers
            ).status_code,
            api.patch(path, json={"title": "u"}, headers=alice.headers).status_code,
            api.patch(f"{path}/complete", headers=alice.headers).status_code,
            api.get(path, headers=bob.headers).status_code,
            api.post("/api/tasks", json={"title": ""}, headers=alice.headers).status_code,
            api.get("/api/tasks").status_code,
            api.delete(path, headers=alice.headers).status_code,
        ]

    assert statuses == [200, 200, 200, 200, 200, 200, 200, 404, 400, 401, 200]
    assert entered == []
    assert _worker_threads() <= threads_before


def _stalled_readers(
    base_url: str, token: str, connections: int, requests_each: int
) -> list[socket.socket]:
    """Connections that pipeline big listing requests and never read a byte of the answers."""
    host, port = base_url.removeprefix("http://").split(":")
    request = (
        f"GET /api/tasks?limit=200 HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()
    sockets = []
    for _ in range(connections):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a page
        sock.connect((host, int(port)))
        sock.sendall(request * requests_each)
        sockets.append(sock)
    return sockets


def _wait_until_quiet(api: httpx.Client) -> None:
    """Until the database answers promptly three times in a row (at most 20 s)."""
    deadline, prompt = time.monotonic() + 20, 0
    # A listing, not /readyz: readiness is served from a result up to a second old.
    prober = UserFactory.create()
    while prompt < 3:
        assert time.monotonic() < deadline, "the stalled readers' backlog never cleared"
        started = time.monotonic()
        answered = api.get("/api/tasks?limit=1", headers=prober.headers).status_code == 200
        prompt = prompt + 1 if answered and time.monotonic() - started < 0.1 else 0
        time.sleep(0.2)


def test_a_client_that_never_reads_holds_no_database_connection(
    service_database_url: str,
) -> None:
    staller = UserFactory.create()
    settings = make_settings(service_database_url, db_pool_size=4, db_pool_timeout_seconds=1)
    with serving(create_app(settings)) as url, httpx.Client(base_url=url, timeout=10) as api:
        for number in range(200):
            TaskFactory.create(api=api, owner=staller, title=f"a long enough title {number}")
        with ExitStack() as stack:
            for sock in _stalled_readers(url, staller.token, connections=24, requests_each=50):
                stack.callback(sock.close)
            # The answers that fit in the sockets' buffers go out; then every stalled
            # connection is left with a response it cannot deliver.
            _wait_until_quiet(api)

            other = UserFactory.create()
            statuses = []
            started = time.monotonic()
            for _ in range(20):
                created = api.post("/api/tasks", json={"title": "mine"}, headers=other.headers)
                statuses += [created.status_code, api.get("/readyz").status_code]
                listed = api.get("/api/tasks", headers=other.headers)
                statuses.append(listed.status_code)
            took = time.monotonic() - started

    assert statuses == [201, 200, 200] * 20
    assert took < 10


def test_a_transaction_commits_all_its_statements_or_none(
    service_database_url: str, db_engine: Engine
) -> None:
    marker = f"unit-of-work-{uuid.uuid4()}"
    owner = uuid.uuid4()
    database = Database.from_settings(make_settings(service_database_url))

    async def write_two(connection: ServiceConnection) -> int:
        # Row-level security holds inside a transaction too: only the owner's rows.
        await connection.execute(
            "INSERT INTO users (id) VALUES (%(user)s) ON CONFLICT DO NOTHING", {"user": owner}
        )
        await connection.execute(
            "INSERT INTO tasks (id, user_id, title) "
            "VALUES (gen_random_uuid(), %(user)s, %(title)s)",
            {"user": owner, "title": marker},
        )
        return 2

    async def write_then_fail(connection: ServiceConnection) -> None:
        await write_two(connection)
        raise RuntimeError("the second step failed")

    async def run() -> None:
        await database.open()
        request = database.for_request(time.monotonic(), owner)
        assert await request.transaction(write_two) == 2
        with pytest.raises(RuntimeError):
            await request.transaction(write_then_fail)
        await database.close()

    anyio.run(run)
    with db_engine.connect() as connection:
        count = connection.execute(
            text("SELECT count(*) FROM tasks WHERE title = :title"), {"title": marker}
        ).scalar_one()
    assert count == 1  # the committed unit, and nothing of the failed one


def test_a_transactions_statements_are_bounded_by_the_statement_timeout(
    service_database_url: str,
) -> None:
    database = Database.from_settings(
        make_settings(service_database_url, db_statement_timeout_ms=300)
    )

    async def sleep(connection: ServiceConnection) -> None:
        await connection.execute("SELECT pg_sleep(2)")

    async def run() -> tuple[BaseException | None, float]:
        await database.open()
        started = time.monotonic()
        try:
            await database.for_request(time.monotonic(), None).transaction(sleep)
        except Exception as error:
            return error, time.monotonic() - started
        finally:
            await database.close()
        return None, time.monotonic() - started

    raised, took = anyio.run(run)
    assert isinstance(raised, psycopg.errors.QueryCanceled)  # cancelled by the server itself
    assert isinstance(raised, psycopg.OperationalError)
    assert took < 1.5


def test_each_operation_is_one_statement_in_one_round_trip(
    service_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = UserFactory.create()
    app = create_app(make_settings(service_database_url))
    sent_by: dict[str, list[Sent]] = {}
    with serving(app) as url, httpx.Client(base_url=url) as api:
        api.get("/readyz")  # the pool's first connection, and its one-time checks
        task = TaskFactory.create(api=api, owner=alice)
        path = f"/api/tasks/{task['id']}"
        keyed = {**alice.headers, "Idempotency-Key": "purge-now"}
        api.post("/api/tasks", json={"title": "t"}, headers=keyed)  # this second's purge
        operations: dict[str, Callable[[], httpx.Response]] = {
            "create": lambda: api.post("/api/tasks", json={"title": "t"}, headers=alice.headers),
            "create with a key": lambda: api.post(
                "/api/tasks", json={"title": "t"}, headers={**alice.headers, "Idempotency-Key": "c"}
            ),
            "toggle with a key": lambda: api.patch(
                f"{path}/complete", headers={**alice.headers, "Idempotency-Key": "t"}
            ),
            "list": lambda: api.get("/api/tasks", headers=alice.headers),
            "get": lambda: api.get(path, headers=alice.headers),
            "replace": lambda: api.put(
                path, json={"title": "r", "completed": True}, headers=alice.headers
            ),
            "patch": lambda: api.patch(path, json={"title": "p"}, headers=alice.headers),
            "toggle": lambda: api.patch(f"{path}/complete", headers=alice.headers),
            "delete": lambda: api.delete(path, headers=alice.headers),
        }
        for name, call in operations.items():
            with recorded_statements(monkeypatch) as sent:
                assert call().status_code in (200, 201)
            sent_by[name] = list(sent)

    for name, sent in sent_by.items():
        # The user for row-level security, then the statement: pipelined, so one round trip
        # and one transaction.
        assert [s.sets_the_row_owner for s in sent] == [True, False], name
        assert all(s.pipelined for s in sent), name
