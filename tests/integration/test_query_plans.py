"""Flat cost: every statement the service issues is answered from an index, never by reading
a table through, on a database with many users, one heavy user and many stored idempotency
keys.

The statements are the ones the service really sends (recorded at the driver while a user
goes through every operation, conditional and idempotent ones included), explained with their
real parameters. A function's plan is hidden from EXPLAIN, so each statement is also run and
the pages it touched are counted: a walk past every key or task would show there.
"""

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, make_url, text

from service.main import create_app
from service.schema import metadata
from tests.support.apps import make_settings
from tests.support.databases import as_service, fresh_database_on, migrate_for_service
from tests.support.live import serving
from tests.support.statements import recorded_statements
from tests.support.tokens import bearer, mint

USERS, TASKS_PER_USER, HEAVY_USER_TASKS = 400, 50, 20_000
KEYS_PER_USER = 50  # stored idempotency keys, none expired: 20,000 in all
# Pages a statement that reads one user's few rows by index may touch; a walk of the 20,000
# keys or tasks touches hundreds. The heavy user's pages of 200 tasks are bounded apart.
PAGES_FOR_A_FEW_ROWS = 40


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
            connection.execute(
                text(
                    "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, body, "
                    "expires_at) SELECT u.id, 'key-' || n, '\\x00', 201, '{}', "
                    "now() + n * interval '1 minute' FROM users u, generate_series(1, :n) AS n"
                ),
                {"n": KEYS_PER_USER},
            )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE"))
        engine.dispose()
        yield rendered


def test_every_statement_the_service_issues_uses_an_index(
    seeded_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(make_settings(as_service(seeded_url)))
    heavy = bearer(mint("heavy-user"))
    with recorded_statements(monkeypatch) as sent:
        heavy_user_id = _walk_every_operation(app, seeded_url, heavy)
    issued = {s.statement: s.parameters for s in sent if not s.sets_the_row_owner}
    _explain_each(seeded_url, heavy_user_id, issued)


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
        etag = api.get(task, headers=heavy).headers["ETag"]
        api.get(task, headers={**heavy, "If-None-Match": etag})
        etag = api.put(task, json={"title": "t", "completed": True}, headers=heavy).headers["ETag"]
        etag = api.patch(task, json={"title": "u"}, headers={**heavy, "If-Match": etag}).headers[
            "ETag"
        ]
        etag = api.put(
            task, json={"title": "v", "completed": False}, headers={**heavy, "If-Match": etag}
        ).headers["ETag"]
        api.patch(f"{task}/complete", headers=heavy)
        once = {**heavy, "Idempotency-Key": "walk-1"}
        for _ in range(2):  # the first time, and the replay
            api.post("/api/tasks", json={"title": "once"}, headers=once)
            api.patch(f"{task}/complete", headers={**heavy, "Idempotency-Key": "walk-2"})
        etag = api.patch(f"{task}/complete", headers=heavy).headers["ETag"]
        api.patch(f"{task}/complete", headers={**heavy, "If-Match": etag})
        api.delete(task, headers={**heavy, "If-Match": '"0"'})
        api.delete(task, headers=heavy)
    return str(first["user_id"])


def _explain_each(seeded_url: str, user_id: str, statements: dict[str, Any]) -> None:
    """EXPLAIN each statement with its parameters, on psycopg 3 as the service sent it: as
    the service's role, for the heavy user, so the row-level security policy is planned too;
    then run it (rolled back) and count the pages it touched."""
    assert len(statements) >= 14
    assert any("idempotency_keys" in statement for statement in statements)
    service = make_url(as_service(seeded_url)).set(drivername="postgresql")
    with (
        psycopg.connect(service.render_as_string(hide_password=False)) as connection,
        connection.cursor() as cursor,
    ):
        for statement, parameters in statements.items():
            cursor.execute("SELECT set_config('tasks_api.user_id', %s, true)", (user_id,))
            cursor.execute("EXPLAIN " + statement, parameters)
            plan = "\n".join(str(row[0]) for row in cursor.fetchall())
            for table in metadata.sorted_tables:
                assert f"Seq Scan on {table.name} " not in plan, f"{statement}\n{plan}"
            if "FROM tasks" in statement or "UPDATE tasks" in statement:
                assert "Index" in plan, f"{statement}\n{plan}"
            # Twice: the first run also reads the catalog into this session's caches.
            for _ in range(2):
                cursor.execute("SAVEPOINT run")
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters)
                (analyzed,) = cursor.fetchone() or (None,)
                cursor.execute("ROLLBACK TO SAVEPOINT run")
            pages = _pages_touched(analyzed[0]["Plan"])
            bound = PAGES_FOR_A_FEW_ROWS * (10 if "LIMIT" in statement else 1)
            assert pages <= bound, f"{statement} touched {pages} pages\n{plan}"
            connection.rollback()


def _pages_touched(plan: dict[str, Any]) -> int:
    """Shared pages the top node (which counts its children's, and a function's) touched."""
    return int(plan.get("Shared Hit Blocks", 0)) + int(plan.get("Shared Read Blocks", 0))


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
