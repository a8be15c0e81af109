"""Flat cost: every statement the service issues is answered from an index, never by reading
the tasks table through, on a database with many users and one heavy user.

The statements are the ones the service really sends (captured from its engine while a user
goes through every operation), explained with their real parameters.
"""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, create_engine, event, make_url, text

from service.main import create_app
from tests.conftest import make_settings
from tests.databases import as_service, fresh_database_on, migrate_for_service
from tests.live import serving
from tests.tokens import bearer, mint

USERS, TASKS_PER_USER, HEAVY_USER_TASKS = 400, 50, 20_000


@pytest.fixture(scope="module")
def seeded_url(database_url: str) -> Iterator[str]:
    with fresh_database_on(database_url) as url:
        rendered = url.render_as_string(hide_password=False)
        migrate_for_service(rendered)
        engine = create_engine(rendered)
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO users (id) SELECT gen_random_uuid() FROM generate_series(1, :n)"),
                {"n": USERS},
            )
            connection.execute(
                text(
                    "INSERT INTO tasks (id, user_id, title, completed) "
                    "SELECT gen_random_uuid(), u.id, 'task', random() < 0.3 "
                    "FROM users u, generate_series(1, :n)"
                ),
                {"n": TASKS_PER_USER},
            )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE"))
        engine.dispose()
        yield rendered


def test_every_statement_the_service_issues_uses_an_index(seeded_url: str) -> None:
    app = create_app(make_settings(as_service(seeded_url)))
    issued: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if conn.dialect.driver == "psycopg":  # the service's; the seeding here uses psycopg2
            issued.append((statement, parameters))

    heavy = bearer(mint("heavy-user"))
    # Every engine's statements, the service's (on psycopg 3) among them, while it is served.
    event.listen(Engine, "before_cursor_execute", record)
    try:
        heavy_user_id = _walk_every_operation(app, seeded_url, heavy)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    _explain_each(seeded_url, heavy_user_id, dict(issued))


def _walk_every_operation(app: FastAPI, seeded_url: str, heavy: dict[str, str]) -> str:
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as api:
        first = api.post("/api/tasks", json={"title": "first"}, headers=heavy).json()
        _seed_heavy_user(seeded_url, first["user_id"])
        page = api.get("/api/tasks", params={"limit": 50}, headers=heavy).json()
        for _ in range(20):  # deep into the heavy user's list, through cursors
            page = api.get(
                "/api/tasks", params={"limit": 200, "cursor": page["next_cursor"]}, headers=heavy
            ).json()
        api.get("/api/tasks", params={"completed": "true", "limit": 50}, headers=heavy)
        task = f"/api/tasks/{first['id']}"
        api.get(task, headers=heavy)
        api.put(task, json={"title": "t", "completed": True}, headers=heavy)
        api.patch(task, json={"title": "u"}, headers=heavy)
        api.patch(f"{task}/complete", headers=heavy)
        api.delete(task, headers=heavy)
    return str(first["user_id"])


def _explain_each(seeded_url: str, user_id: str, statements: dict[str, Any]) -> None:
    """EXPLAIN each statement with its parameters, on psycopg 3 as the service sent it: as
    the service's role, for the heavy user, so the row-level security policy is planned too."""
    assert len(statements) >= 7
    service = make_url(as_service(seeded_url)).set(drivername="postgresql+psycopg")
    engine = create_engine(service)
    try:
        with engine.begin() as connection:
            as_user = text("SELECT set_config('tasks_api.user_id', :user_id, true)")
            connection.execute(as_user, {"user_id": user_id})
            raw = connection.connection.dbapi_connection
            assert raw is not None
            with raw.cursor() as cursor:
                for statement, parameters in statements.items():
                    cursor.execute("EXPLAIN " + statement, parameters)
                    plan = "\n".join(row[0] for row in cursor.fetchall())
                    assert "Seq Scan on tasks" not in plan, f"{statement}\n{plan}"
                    if "FROM tasks" in statement or "UPDATE tasks" in statement:
                        assert "Index" in plan, f"{statement}\n{plan}"
    finally:
        engine.dispose()


def _seed_heavy_user(url: str, user_id: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO tasks (id, user_id, title, completed, created_at, updated_at) "
                "SELECT gen_random_uuid(), :user_id, 'heavy', n % 7 = 0, "
                "now() - n * interval '1 second', now() FROM generate_series(1, :n) AS n"
            ),
            {"user_id": user_id, "n": HEAVY_USER_TASKS},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE tasks"))
    engine.dispose()
