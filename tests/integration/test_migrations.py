"""Alembic owns the schema: it matches the models, released revisions never change, the
database enforces exactly the rules the code holds, and concurrent starts migrate safely."""

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import DateTime, Engine, String, create_engine, inspect, make_url, text

from service.data.admin import migrate
from service.schema import metadata
from tests.support.databases import alembic_config, fresh_database_on, head_revision
from tests.support.live import cli

VERSIONS = Path(__file__).resolve().parents[2] / "service" / "migrations" / "versions"
# Every revision as it was released. A released revision is a record of what databases out
# there have applied: changing it changes nothing for them, only for new ones, so the two
# drift apart unnoticed. A new rule is a new revision; record its sha256 here when it lands.
RELEASED = {
    "0001_users_and_tasks.py": "a9ea1f98cc56fb38a4ed43139bb4ea3b3b55db844a75ed00a83ffe79ffb53f17",
    "0002_database_wall.py": "7aa2f42f4e68ad04befdd1cddf867bd0c372330e89ee109195f11de49376916b",
    "0003_visible_titles_and_task_counts.py": (
        "12ac43162812f52751eeb61399f283252613665c5773fad3159e9b77957d551a"
    ),
    "0004_braille_blank_is_invisible.py": (
        "03a79242d42c657c5c759a661c9516ddef7ee2690a447a7a42b13e99188b30c4"
    ),
    "0005_invisible_and_tag_characters.py": (
        "d36de4b7a86321cd94956aa76c8234f9183cc4b3e72007c977ac8b796d03dd8c"
    ),
    "0006_idempotency_keys.py": (
        "9f28685122c3ab17185e3ecf786f14a679d07fa161c847c08341c0c821d7aceb"
    ),
    "0007_purge_expired_keys_by_index.py": (
        "d2c7126a3d04baf4ca080b18079a923770c83e3a908a597c20d1794da093463d"
    ),
    "0008_idempotent_writes_store_their_rows.py": (
        "7df890e961d8c1fca94b3cb8d03a989cb52d52de68d596c7b47833d701de3f66"
    ),
}
TIMED_TITLE = ("title", "created_at", "updated_at")
CHECKS = (
    "SELECT conrelid::regclass::text AS owner, conname, pg_get_constraintdef(oid) "
    "FROM pg_constraint WHERE contype = 'c' AND connamespace = 'public'::regnamespace"
)


def test_released_revisions_are_never_changed() -> None:
    on_disk = {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(VERSIONS.glob("*.py"))
    }
    unrecorded = sorted(set(on_disk) - set(RELEASED))
    assert not unrecorded, f"record the sha256 of the new revisions {unrecorded} in RELEASED"
    changed = sorted(name for name, digest in RELEASED.items() if on_disk.get(name) != digest)
    assert not changed, (
        f"released revisions changed or went missing: {changed}. Restore them; a new rule "
        "is a new revision"
    )


def _checks(url: str) -> dict[tuple[str, str], str]:
    engine = create_engine(make_url(url))
    try:
        with engine.connect() as connection:
            return {(owner, name): rule for owner, name, rule in connection.execute(text(CHECKS))}
    finally:
        engine.dispose()


def test_every_check_constraint_is_the_rule_the_code_holds(
    database_url: str, db_engine: Engine
) -> None:
    # PostgreSQL itself renders both sides: the code's rules as created from the models on an
    # empty database, and the rules the migrations left on the test database.
    with fresh_database_on(database_url) as scratch:
        engine = create_engine(scratch)
        metadata.create_all(engine)
        engine.dispose()
        from_the_code = _checks(scratch.render_as_string(hide_password=False))
    migrated = _checks(db_engine.url.render_as_string(hide_password=False))
    assert from_the_code
    assert migrated == from_the_code


def test_a_database_migrated_by_1_1_0_is_brought_to_todays_rules(
    database_url: str, db_engine: Engine
) -> None:
    # 1.1.0 shipped with revision 0003, whose visible-title check let U+2800 alone through.
    with fresh_database_on(database_url) as url:
        rendered = url.render_as_string(hide_password=False)
        engine = create_engine(url)
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0003")
            connection.execute(text("INSERT INTO users (id) VALUES (gen_random_uuid())"))
            connection.execute(
                text(
                    "INSERT INTO tasks (id, user_id, title) "
                    "SELECT gen_random_uuid(), id, :title FROM users"
                ),
                {"title": "\u2800"},
            )
        migrate(rendered, metadata)
        with engine.connect() as connection:
            titles = connection.execute(text("SELECT title FROM tasks")).scalars().all()
        engine.dispose()
        upgraded = _checks(rendered)
    assert titles == ["(untitled)"]
    # The same rules as a database migrated from scratch (which the test above holds to the
    # code's).
    assert upgraded == _checks(db_engine.url.render_as_string(hide_password=False))


def test_migrations_produce_exactly_the_models_schema(db_engine: Engine) -> None:
    with db_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert differences == []


def test_schema_has_the_promised_constraints(db_engine: Engine) -> None:
    schema = inspect(db_engine)
    (foreign_key,) = schema.get_foreign_keys("tasks")
    assert foreign_key["referred_table"] == "users"
    assert foreign_key["options"]["ondelete"] == "CASCADE"
    columns = {column["name"]: column for column in schema.get_columns("tasks")}
    title, created_at, updated_at = (columns[name]["type"] for name in TIMED_TITLE)
    assert isinstance(title, String)
    assert title.length == 500
    for moment in (created_at, updated_at):
        assert isinstance(moment, DateTime)
        assert moment.timezone is True
    indexes = {index["name"]: index["column_names"] for index in schema.get_indexes("tasks")}
    assert indexes["ix_tasks_user_created_id"] == ["user_id", "created_at", "id"]


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    with fresh_database_on(database_url) as url:
        yield url.render_as_string(hide_password=False)


def test_concurrent_migrations_are_safe(empty_database: str) -> None:
    env = {"DATABASE_URL": empty_database, "PATH": "/usr/bin:/bin"}
    processes = [
        subprocess.Popen(cli("migrate"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    results = [process.communicate(timeout=120) for process in processes]

    assert [process.returncode for process in processes] == [0] * 4, results
    engine = create_engine(make_url(empty_database))
    try:
        with engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version"))
            assert version.scalars().all() == [head_revision()]
        assert {"users", "tasks"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_row_level_security_is_enabled_and_forced_with_a_policy_per_table(
    db_engine: Engine,
) -> None:
    # Every table the service declares: a new resource's table without its policy fails here.
    declared = sorted(table.name for table in metadata.sorted_tables)
    with db_engine.connect() as connection:
        tables = connection.execute(
            text(
                "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                "WHERE relname = ANY(:names) AND relkind = 'r'"
            ),
            {"names": declared},
        ).all()
        policies = connection.execute(
            text("SELECT tablename, policyname, cmd FROM pg_policies WHERE schemaname = 'public'")
        ).all()
    assert sorted(tuple(row) for row in tables) == [(name, True, True) for name in declared]
    # One policy per table for the request's user; and for the purge of expired idempotency
    # keys, one that only the tables' owner (the role that migrated) is bound by.
    expected = [(name, f"{name}_of_the_current_user", "ALL") for name in declared]
    expected.append(("idempotency_keys", "idempotency_keys_expired_for_the_owner", "ALL"))
    assert sorted(tuple(row) for row in policies) == sorted(expected)
