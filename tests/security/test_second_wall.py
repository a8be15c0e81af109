"""Rule: PostgreSQL itself keeps users apart and titles clean, even if the service forgot to.

The first wall is the service: every statement filters by the caller's user id, every title
is checked. The second is the database: row-level security lets a statement reach only the
rows of the user the request set in its own transaction (`tasks_api.user_id`), and CHECK
constraints refuse what the API refuses. The service connects as a role that RLS binds: no
superuser, no BYPASSRLS, only SELECT, INSERT, UPDATE and DELETE on the two tables.
"""

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg2
import psycopg2.errors
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session

import service.tasks.routes as task_routes
from service.main import create_app
from service.tasks.statements import Statements
from service.tasks.table import TASK_CHECKS, User
from service.tasks.titles import TITLE_WHITESPACE, clean_title
from tests.support.apps import make_settings
from tests.support.databases import (
    REQUEST_PRIVILEGES,
    SERVICE_ROLE,
    as_service,
    fresh_database_on,
    migrate_for_service,
    service_role_privileges,
)
from tests.support.factories import ApiUser, TaskFactory, UserFactory
from tests.support.isolation_model import run_isolation_model
from tests.support.live import serving
from tests.support.pooler import pgbouncer

# --- Constraints that mirror the API --------------------------------------------------------

INSERT_TASK = (
    "INSERT INTO tasks (id, user_id, title, created_at, updated_at) "
    "VALUES (gen_random_uuid(), :user_id, :title, now(), now() + :skew * interval '1 second')"
)


@pytest.fixture
def a_user_row(db_engine: Engine) -> str:
    user_id = str(uuid.uuid4())
    with db_engine.begin() as connection:
        connection.execute(text("INSERT INTO users (id) VALUES (:id)"), {"id": user_id})
    return user_id


@pytest.mark.parametrize(
    ("title", "skew", "constraint"),
    [
        ("", 0, "ck_tasks_title_length"),
        (" padded", 0, "ck_tasks_title_trimmed"),
        ("padded\u3000", 0, "ck_tasks_title_trimmed"),
        ("bell\x07", 0, "ck_tasks_title_characters"),
        ("two\nlines", 0, "ck_tasks_title_characters"),
        ("\x1b[2J clear screen", 0, "ck_tasks_title_characters"),
        ("right-to-left \u202e override", 0, "ck_tasks_title_characters"),
        ("isolate \u2066", 0, "ck_tasks_title_characters"),
        ("nonchar \ufffe", 0, "ck_tasks_title_characters"),
        ("C1 \x85 control", 0, "ck_tasks_title_characters"),
        ("hidden \U000e0041 tag", 0, "ck_tasks_title_characters"),
        ("\U0001d173\U000e0100", 0, "ck_tasks_title_visible"),
        ("\u2800", 0, "ck_tasks_title_visible"),
        ("updated before created", -1, "ck_tasks_updated_after_created"),
    ],
)
def test_the_database_refuses_rows_the_api_would_refuse_naming_the_rule(
    db_engine: Engine, a_user_row: str, title: str, skew: int, constraint: str
) -> None:
    # Raw SQL as the tables' owner: no API in the way, and no row-level security either.
    with pytest.raises(IntegrityError) as refused, db_engine.begin() as connection:
        connection.execute(text(INSERT_TASK), {"user_id": a_user_row, "title": title, "skew": skew})
    assert isinstance(refused.value.orig, psycopg2.errors.CheckViolation)
    assert refused.value.orig.diag.constraint_name == constraint


def test_a_valid_row_passes_every_constraint(db_engine: Engine, a_user_row: str) -> None:
    with db_engine.begin() as connection:
        title = "Buy milk \u00e9 \u4e2d\u6587 \U0001f600"
        connection.execute(text(INSERT_TASK), {"user_id": a_user_row, "title": title, "skew": 0})


# Titles near every edge of the rule: the trim set, refused characters, and anything else
# PostgreSQL can hold (text cannot hold NUL, and surrogates are not characters).
_storable = st.characters(codec="utf-8", exclude_characters="\x00")
_edges = st.sampled_from(
    TITLE_WHITESPACE
    + "\x01\x1f\x7f\x85\x9f\u202a\u2069\ufdd0\ufffeab\u2800"
    + "\U0001bca0\U0001d173\U000e0001\U000e0041\U000e007f\U000e0080\U000e0100\U000e0fff"
)
_titles = st.text(alphabet=st.one_of(_edges, _storable), max_size=40) | st.builds(
    lambda n, c: c * n, st.integers(495, 505), st.sampled_from("ab\u00e9")
)


@settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(title=_titles)
def test_the_api_and_the_database_agree_on_which_titles_can_be_stored(
    db_engine: Engine, a_user_row: str, title: str
) -> None:
    try:
        api_stores_it = clean_title(title) == title
    except ValueError:
        api_stores_it = False
    with db_engine.connect() as connection:
        transaction = connection.begin()
        try:
            parameters = {"user_id": a_user_row, "title": title, "skew": 0}
            connection.execute(text(INSERT_TASK), parameters)
            database_stores_it = True
        except DBAPIError:  # a CHECK constraint, or varchar(500)
            database_stores_it = False
        finally:
            transaction.rollback()
    assert api_stores_it == database_stores_it


def test_the_constraints_are_the_ones_the_models_declare(db_engine: Engine) -> None:
    with db_engine.connect() as connection:
        names = connection.execute(
            text(
                "SELECT conname FROM pg_constraint "
                "WHERE conrelid = 'tasks'::regclass AND contype = 'c'"
            )
        ).scalars()
        assert set(names) == set(TASK_CHECKS)


# --- Relationships ---------------------------------------------------------------------------


def test_a_users_tasks_load_through_the_relationship_and_go_with_the_user(
    api: httpx.Client, alice: ApiUser, db_engine: Engine
) -> None:
    titles = {TaskFactory.create(api=api, owner=alice)["title"] for _ in range(3)}
    user_id = uuid.UUID(alice.sub)
    with Session(db_engine) as session:
        user = session.get(User, user_id)
        assert user is not None
        assert {task.title for task in user.tasks} == titles
        assert all(task.user is user for task in user.tasks)
        session.delete(user)  # passive: the database's ON DELETE CASCADE removes the tasks
        session.commit()
    with db_engine.connect() as connection:
        left = connection.execute(
            text("SELECT count(*) FROM tasks WHERE user_id = :id"), {"id": user_id}
        ).scalar_one()
    assert left == 0


# --- Row-level security ----------------------------------------------------------------------


@pytest.fixture
def as_the_service(database_url: str) -> Iterator[Any]:
    """A raw connection as the service's role, in a transaction rolled back at the end."""
    connection = psycopg2.connect(as_service(database_url).replace("+psycopg2", ""))
    try:
        yield connection
    finally:
        connection.rollback()
        connection.close()


def _act_as(connection: Any, user_id: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('tasks_api.user_id', %s, true)", (user_id,))


def _visible(connection: Any) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT user_id::text FROM tasks")
        return {row[0] for row in cursor.fetchall()}


def test_without_a_user_the_service_role_sees_no_rows_at_all(
    as_the_service: Any, alice_task: dict[str, Any]
) -> None:
    assert _visible(as_the_service) == set()


def test_with_a_user_set_only_that_users_rows_are_visible(
    as_the_service: Any, api: httpx.Client, alice: ApiUser, bob: ApiUser
) -> None:
    TaskFactory.create(api=api, owner=alice)
    TaskFactory.create(api=api, owner=bob)
    _act_as(as_the_service, alice.sub)
    assert _visible(as_the_service) == {alice.sub}


def test_the_user_setting_ends_with_its_transaction(
    as_the_service: Any, alice_task: dict[str, Any], alice: ApiUser
) -> None:
    _act_as(as_the_service, alice.sub)
    assert _visible(as_the_service) == {alice.sub}
    as_the_service.commit()
    assert _visible(as_the_service) == set()


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO tasks (id, user_id, title) VALUES (gen_random_uuid(), %(bob)s, 'planted')",
        "UPDATE tasks SET user_id = %(bob)s WHERE user_id = %(alice)s",
        "INSERT INTO users (id) VALUES (gen_random_uuid())",
    ],
    ids=["insert a task for someone else", "give a task away", "create another user"],
)
def test_no_statement_can_write_a_row_for_another_user(
    as_the_service: Any,
    alice_task: dict[str, Any],
    alice: ApiUser,
    bob: ApiUser,
    api: httpx.Client,
    statement: str,
) -> None:
    TaskFactory.create(api=api, owner=bob)  # bob's user row exists
    _act_as(as_the_service, alice.sub)
    refused = pytest.raises(psycopg2.errors.InsufficientPrivilege, match="row-level security")
    with refused, as_the_service.cursor() as cursor:
        cursor.execute(statement, {"alice": alice.sub, "bob": bob.sub})


def test_another_users_rows_cannot_be_changed_or_deleted_even_by_id(
    as_the_service: Any, alice_task: dict[str, Any], bob: ApiUser, db_engine: Engine
) -> None:
    _act_as(as_the_service, bob.sub)
    with as_the_service.cursor() as cursor:
        cursor.execute("UPDATE tasks SET title = 'mine now' WHERE id = %s", (alice_task["id"],))
        assert cursor.rowcount == 0
        cursor.execute("DELETE FROM tasks WHERE id = %s", (alice_task["id"],))
        assert cursor.rowcount == 0
    as_the_service.commit()
    with db_engine.connect() as connection:
        title = connection.execute(
            text("SELECT title FROM tasks WHERE id = :id"), {"id": alice_task["id"]}
        ).scalar_one()
    assert title == alice_task["title"]


def test_no_user_reads_another_users_idempotency_keys(
    as_the_service: Any, db_engine: Engine, alice: ApiUser, bob: ApiUser
) -> None:
    # Stored outcomes hold task titles: they are bound by row-level security like tasks,
    # expired or not.
    with db_engine.begin() as connection:
        for user, expires in ((alice, "1 hour"), (bob, "1 hour"), (bob, "-1 hour")):
            connection.execute(
                text(
                    "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, body, "
                    "expires_at) VALUES (:user, :key, '', 201, 'a title', now() + "
                    "CAST(:expires AS interval))"
                ),
                {"user": user.sub, "key": f"k{expires}", "expires": expires},
            )
    _act_as(as_the_service, alice.sub)
    with as_the_service.cursor() as cursor:
        cursor.execute("SELECT user_id::text FROM idempotency_keys")
        assert {row[0] for row in cursor.fetchall()} == {alice.sub}
        cursor.execute(
            "UPDATE idempotency_keys SET body = 'planted' WHERE user_id = %s", (bob.sub,)
        )
        assert cursor.rowcount == 0
    refused = pytest.raises(psycopg2.errors.InsufficientPrivilege, match="row-level security")
    with refused, as_the_service.cursor() as cursor:
        cursor.execute(
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, body, expires_at) "
            "VALUES (%s, 'x', '', 201, '', now())",
            (bob.sub,),
        )


def test_the_service_role_cannot_switch_row_security_off(as_the_service: Any) -> None:
    with pytest.raises(psycopg2.errors.InsufficientPrivilege), as_the_service.cursor() as cursor:
        cursor.execute("ALTER TABLE tasks DISABLE ROW LEVEL SECURITY")
    as_the_service.rollback()
    with as_the_service.cursor() as cursor:
        # row_security = off makes a query that RLS would filter an error, never a bypass.
        cursor.execute("SET LOCAL row_security = off")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="row-level security"):
            cursor.execute("SELECT count(*) FROM tasks")


def test_the_service_role_has_exactly_the_privileges_requests_need(db_engine: Engine) -> None:
    with db_engine.connect() as connection:
        role = connection.execute(
            text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = :role"),
            {"role": SERVICE_ROLE},
        ).one()
    # Nothing on alembic_version or anything else, and no TRUNCATE, REFERENCES or TRIGGER.
    assert service_role_privileges(db_engine) == REQUEST_PRIVILEGES
    assert tuple(role) == (False, False)


def test_no_user_setting_survives_a_request_on_a_pooled_connection(
    database_url: str, alice: ApiUser, bob: ApiUser
) -> None:
    # One server connection behind PgBouncer (transaction mode) serves every client: whatever
    # a request left on it, the next client would inherit.
    with pgbouncer(as_service(database_url), pool_size=1) as pooled:
        app = create_app(make_settings(pooled))
        with serving(app) as url, httpx.Client(base_url=url) as api:
            for user in (alice, bob, alice):
                created = api.post("/api/tasks", json={"title": "t"}, headers=user.headers)
                assert created.status_code == 201
                listed = api.get("/api/tasks", headers=user.headers).json()["tasks"]
                assert {task["user_id"] for task in listed} == {user.sub}
        with psycopg2.connect(pooled.replace("+psycopg2", "")) as raw, raw.cursor() as cursor:
            cursor.execute("SELECT current_setting('tasks_api.user_id', true)")
            left_behind = cursor.fetchone()
            cursor.execute("SELECT count(*) FROM tasks")
            visible = cursor.fetchone()
    assert left_behind in ((None,), ("",))
    assert visible == (0,)


# --- The proof: the database alone holds the line ----------------------------------------------


@pytest.fixture
def owner_filter_off(monkeypatch: pytest.MonkeyPatch) -> Statements:
    """The test-only hook: every statement loses its `WHERE user_id = :owner`."""
    unfiltered = Statements(owner_filter=False)
    monkeypatch.setattr(task_routes, "statements", unfiltered)
    return unfiltered


def test_with_the_owner_filter_off_row_level_security_alone_keeps_users_apart(
    service_database_url: str, owner_filter_off: Statements
) -> None:
    assert "tasks.user_id = " not in owner_filter_off.get  # the hook took
    app = create_app(make_settings(service_database_url))
    with serving(app) as url, httpx.Client(base_url=url) as api:
        run_isolation_model(api)


@pytest.mark.usefixtures("owner_filter_off")
def test_with_the_owner_filter_and_row_level_security_off_the_same_model_fails(
    database_url: str,
) -> None:
    # Shows the proof above can fail: with neither wall, users see each other's tasks.
    with fresh_database_on(database_url) as admin_url:
        service_url = migrate_for_service(admin_url)
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            for table in ("tasks", "users"):
                connection.execute(text(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY"))
        admin.dispose()
        app = create_app(make_settings(service_url))
        with serving(app) as url, httpx.Client(base_url=url) as api:
            # Someone else's task, there before the model starts: with neither wall it shows
            # up in the model's users' listings at the first check, in every example alike.
            TaskFactory.create(api=api, owner=UserFactory.create())
            with pytest.raises(AssertionError):
                run_isolation_model(api)
