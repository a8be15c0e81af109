"""Alembic owns the schema: it matches the models, and concurrent starts migrate safely."""

import subprocess
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, make_url, text
from sqlmodel import SQLModel

import service.models  # noqa: F401 - registers the tables
from tests.databases import fresh_database_on
from tests.live import cli


def test_migrations_produce_exactly_the_models_schema(db_engine: Engine) -> None:
    with db_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, SQLModel.metadata)
    assert differences == []


def test_schema_has_the_promised_constraints(db_engine: Engine) -> None:
    schema = inspect(db_engine)
    (foreign_key,) = schema.get_foreign_keys("tasks")
    assert foreign_key["referred_table"] == "users"
    assert foreign_key["options"]["ondelete"] == "CASCADE"
    columns = {column["name"]: column for column in schema.get_columns("tasks")}
    assert columns["title"]["type"].length == 500
    assert columns["created_at"]["type"].timezone is True
    assert columns["updated_at"]["type"].timezone is True
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
            assert version.scalars().all() == ["0003"]
        assert {"users", "tasks"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_row_level_security_is_enabled_and_forced_with_a_policy_per_table(
    db_engine: Engine,
) -> None:
    with db_engine.connect() as connection:
        tables = connection.execute(
            text(
                "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                "WHERE relname IN ('users', 'tasks') AND relkind = 'r'"
            )
        ).all()
        policies = connection.execute(
            text("SELECT tablename, policyname, cmd FROM pg_policies WHERE schemaname = 'public'")
        ).all()
    assert sorted(tuple(row) for row in tables) == [("tasks", True, True), ("users", True, True)]
    assert sorted(tuple(row) for row in policies) == [
        ("tasks", "tasks_of_the_current_user", "ALL"),
        ("users", "users_of_the_current_user", "ALL"),
    ]
