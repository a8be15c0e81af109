"""The `tasks-api` command: serve, migrate, token."""

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import jwt
from sqlalchemy import make_url

from tests.live import cli, service_process
from tests.tokens import SECRET, bearer


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
    with_password = make_url(database_url).set(password="hunter2-secret")
    env = {
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
    env = {"DATABASE_URL": database_url, "JWT_SECRET": SECRET}
    with service_process("--workers", "2", "--no-migrate", env=env) as service:
        token = _run("token", "--sub", "w", env=env).stdout.strip()
        statuses = {
            httpx.get(f"{service.base_url}/api/tasks", headers=bearer(token)).status_code
            for _ in range(10)
        }
    assert statuses == {200}
