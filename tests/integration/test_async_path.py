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
import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db import Database
from service.main import create_app
from tests.conftest import make_settings
from tests.factories import TaskFactory, UserFactory
from tests.live import serving

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

    async def write_two(connection: AsyncConnection) -> int:
        # Row-level security holds inside a transaction too: only the owner's rows.
        await connection.execute(
            text("INSERT INTO users (id) VALUES (:user) ON CONFLICT DO NOTHING"), {"user": owner}
        )
        await connection.execute(
            text(
                "INSERT INTO tasks (id, user_id, title) VALUES (gen_random_uuid(), :user, :title)"
            ),
            {"user": owner, "title": marker},
        )
        return 2

    async def write_then_fail(connection: AsyncConnection) -> None:
        await write_two(connection)
        raise RuntimeError("the second step failed")

    async def run() -> None:
        request = database.for_request(time.monotonic(), owner)
        assert await request.transaction(write_two) == 2
        with pytest.raises(RuntimeError):
            await request.transaction(write_then_fail)
        await database.engine.dispose()

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

    async def sleep(connection: AsyncConnection) -> None:
        await connection.execute(text("SELECT pg_sleep(2)"))

    async def run() -> tuple[str, float]:
        started = time.monotonic()
        try:
            await database.for_request(time.monotonic(), None).transaction(sleep)
        except Exception as error:
            return type(error).__name__, time.monotonic() - started
        finally:
            await database.engine.dispose()
        return "nothing", time.monotonic() - started

    raised, took = anyio.run(run)
    assert raised == "OperationalError"  # the server cancelled it: QueryCanceled
    assert took < 1.5


def test_each_operation_sends_one_statement(service_database_url: str) -> None:
    alice = UserFactory.create()
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if conn.dialect.driver == "psycopg":  # the service's engine, not the tests' own
            sent.append(statement)

    app = create_app(make_settings(service_database_url))
    event.listen(Engine, "before_cursor_execute", record)
    counts: dict[str, int] = {}
    try:
        with serving(app) as url, httpx.Client(base_url=url) as api:
            api.get("/readyz")  # the pool's first connection, and its one-time checks
            operations: dict[str, Callable[[], httpx.Response]] = {
                "create": lambda: api.post(
                    "/api/tasks", json={"title": "t"}, headers=alice.headers
                ),
            }
            task = TaskFactory.create(api=api, owner=alice)
            path = f"/api/tasks/{task['id']}"
            operations |= {
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
                sent.clear()
                assert call().status_code in (200, 201)
                counts[name] = len(sent)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert counts == dict.fromkeys(operations, 1)
