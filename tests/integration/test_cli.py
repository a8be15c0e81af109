"""The `tasks-api` command: serve, migrate, token."""

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import jwt
import pytest
from sqlalchemy import create_engine, make_url, text

from tests.support.databases import as_service, fresh_database_on, head_revision, service_env
from tests.support.live import cli, free_port, service_process
from tests.support.tokens import SECRET, bearer


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli(*args), env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "tasks-api"
    assert script.exists() or shutil.which("tasks-api")


def test_token_prints_a_token_the_service_accepts(database_url: str) -> None:
    result = _run(
        "token",
        "--sub",
        "qa-user",
        "--ttl",
        "120",
        env={"DATABASE_URL": database_url, "JWT_SECRET": SECRET, "JWT_ISSUER": "https://qa"},
    )
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "qa-user"
    assert claims["iss"] == "https://qa"
    assert claims["exp"] - claims["iat"] == 120


def test_serve_announces_address_database_and_tokens_without_the_password(
    database_url: str,
) -> None:
    # The test database trusts local connections, so any password gets in; it must not show.
    with_password = make_url(as_service(database_url)).set(password="hunter2-secret")
    env = {
        **service_env(database_url),
        "DATABASE_URL": with_password.render_as_string(hide_password=False),
        "JWT_SECRET": SECRET,
    }
    with service_process(env=env) as service:
        token = _run("token", "--sub", "someone", env=env).stdout.strip()
        response = httpx.get(f"{service.base_url}/api/tasks", headers=bearer(token))
        output = service.output()

    assert response.status_code == 200
    assert f"listening on {service.base_url}" in output
    assert "database: postgresql+psycopg2://" in output
    assert "tasks-api token --sub" in output
    assert "hunter2-secret" not in output
    assert SECRET not in output


def test_serve_with_two_workers(database_url: str) -> None:
    env = {"DATABASE_URL": as_service(database_url), "JWT_SECRET": SECRET}
    with service_process("--workers", "2", "--no-migrate", env=env) as service:
        token = _run("token", "--sub", "w", env=env).stdout.strip()
        statuses = {
            httpx.get(f"{service.base_url}/api/tasks", headers=bearer(token)).status_code
            for _ in range(10)
        }
    assert statuses == {200}


def test_migrate_uses_migration_database_url_when_it_is_set(database_url: str) -> None:
    with fresh_database_on(database_url) as direct:
        env = {
            # The request path's URL is not even reachable: migrations must not use it.
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/unused",
            "MIGRATION_DATABASE_URL": direct.render_as_string(hide_password=False),
            "JWT_SECRET": SECRET,
        }
        result = _run("migrate", env=env)
        engine = create_engine(direct)
        with engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version"))
            versions = version.scalars().all()
        engine.dispose()
    assert result.returncode == 0, result.stderr
    assert versions == [head_revision()]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "mysql://root@127.0.0.1/tasks"),
        ("DATABASE_URL", "not a url"),
        ("MIGRATION_DATABASE_URL", "sqlite:///tasks.db"),
    ],
)
def test_a_database_url_that_is_not_postgresql_is_refused_naming_the_setting(
    database_url: str, variable: str, value: str
) -> None:
    env = {"DATABASE_URL": database_url, "JWT_SECRET": SECRET, variable: value}
    result = _run("migrate", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(f"tasks-api: configuration error: {variable} ")
    assert "Traceback" not in result.stderr
