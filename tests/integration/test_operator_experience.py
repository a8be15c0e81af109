"""What an operator sees when something is wrong, and the conveniences a developer expects.

Every mistake ends in one line on stderr that names the setting, the host and port (never the
password), what went wrong and what to try, with exit code 2 (a setting) or 3 (the database),
within seconds. `serve` and `migrate` wait a bounded time for a database that is still coming
up. Settings come from the environment and a `.env` file (the environment wins), and
`.env.example` lists them all. The command line answers `--help` and `--version` at once.
"""

import os
import re
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import jwt
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from sqlalchemy import make_url

from service.config import Settings, variable_of
from tests.support.databases import as_service
from tests.support.live import cli, free_port, service_process
from tests.support.operations import CONTRACT
from tests.support.pooler import pgbouncer
from tests.support.proxy import StallingProxy
from tests.support.tokens import SECRET, bearer

ROOT = Path(__file__).resolve().parents[2]
QUICK = {"DB_STARTUP_WAIT_SECONDS": "0", "DB_CONNECT_TIMEOUT_SECONDS": "1"}


def _run(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "JWT_", "DATABASE"))}
    return subprocess.run(
        cli(*args),
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# --- Settings ------------------------------------------------------------------------------


def test_each_invalid_setting_is_one_line_naming_its_variable(tmp_path: Path) -> None:
    env = {"JWT_LEEWAY_SECONDS": "60", "DB_POOL_SIZE": "abc", "JWT_SECRET": SECRET}
    result = _run("migrate", env=env, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(lines) == 2
    assert lines[0].startswith("tasks-api: configuration error: JWT_LEEWAY_SECONDS=60: ")
    assert lines[1].startswith("tasks-api: configuration error: DB_POOL_SIZE=abc: ")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HTTP_MAX_HEADER_BYTES", "lots"),
        ("HTTP_RECEIVE_TIMEOUT_SECONDS", "-1"),
        ("HTTP_MAX_CONNECTIONS", "0"),
    ],
)
def test_a_bad_server_bound_is_one_line_naming_its_variable_before_serving(
    tmp_path: Path, variable: str, value: str
) -> None:
    # The server's bounds are settings like any other, read through the same loader.
    env = {variable: value, "JWT_SECRET": SECRET, "DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}
    result = _run("serve", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert _one_line(result).startswith(f"tasks-api: configuration error: {variable}={value}: ")


def test_a_weak_better_auth_secret_is_named_as_better_auth_secret(tmp_path: Path) -> None:
    env = {"BETTER_AUTH_SECRET": "abc", "DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}
    line = _one_line(result := _run("serve", env=env, cwd=tmp_path))
    assert result.returncode == 2
    assert "BETTER_AUTH_SECRET is 3 bytes" in line
    assert "JWT_SECRET is" not in line


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://[bad", "JWT_JWKS_URL is not an http(s) URL"),
        ("http://keys.example.com/jwks", "JWT_JWKS_URL must use https"),
    ],
)
def test_a_jwks_url_that_cannot_be_trusted_is_refused_at_start(
    tmp_path: Path, url: str, expected: str
) -> None:
    env = {
        "JWT_JWKS_URL": url,
        "JWT_ISSUER": "i",
        "JWT_AUDIENCE": "a",
        "CURSOR_SECRET": SECRET,
        "DATABASE_URL": "postgresql://u@127.0.0.1:1/x",
    }
    result = _run("serve", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert expected in _one_line(result)


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--port", "99999", "99999 is not a TCP port"),
        ("--workers", "0", "0 is not a positive number"),
    ],
)
def test_an_impossible_option_is_refused_before_anything_starts(
    tmp_path: Path, option: str, value: str, expected: str
) -> None:
    result = _run("serve", option, value, env={}, cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr


def test_an_address_in_use_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        result = _run("serve", "--port", port, env={"JWT_SECRET": SECRET}, cwd=tmp_path)
    line = _one_line(result)
    assert result.returncode == 4
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "Address already in use" in line
    assert not (tmp_path / ".tasks-api").exists()  # no embedded database was started


def test_an_unknown_log_level_is_refused_before_anything_starts(tmp_path: Path) -> None:
    result = _run("serve", "--log-level", "bogus", env={}, cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'bogus'" in result.stderr
    assert not (tmp_path / ".tasks-api").exists()  # no embedded database was started


# --- The database at start ---------------------------------------------------------------------


def _database_mistakes(database_url: str) -> dict[str, tuple[str, int, list[str]]]:
    server = make_url(database_url)
    missing = server.set(database="no_such_database_here")
    return {
        "connection refused": (
            "postgresql://app:hunter2@127.0.0.1:1/tasks",
            3,
            ["DATABASE_URL", "127.0.0.1:1/tasks", "Connection refused", "is PostgreSQL running"],
        ),
        "missing database": (
            missing.render_as_string(hide_password=False),
            3,
            ["DATABASE_URL", "no_such_database_here", "does not exist", "create them"],
        ),
        "unknown host": (
            "postgresql://app:hunter2@no-such-host.invalid:5432/tasks",
            3,
            ["DATABASE_URL", "no-such-host.invalid:5432", "check the host name"],
        ),
        "a port that is not a number": (
            "postgresql://app:hunter2@db:port/tasks",
            2,
            ["DATABASE_URL is not a database URL"],
        ),
        "not a URL": ("hunter2", 2, ["DATABASE_URL is not a database URL"]),
        "MySQL": (
            "mysql://app:hunter2@db/tasks",
            2,
            ["DATABASE_URL uses mysql://", "PostgreSQL only"],
        ),
    }


# `serve` and `migrate` share the code that reads the URL and reaches the database; each
# mistake is tried with `migrate`, and the commonest also with `serve`.
@pytest.mark.parametrize(
    ("mistake", "command"),
    [
        ("connection refused", "migrate"),
        ("connection refused", "serve"),
        ("missing database", "migrate"),
        ("missing database", "serve"),
        ("unknown host", "migrate"),
        ("a port that is not a number", "migrate"),
        ("not a URL", "serve"),
        ("MySQL", "migrate"),
    ],
)
def test_a_database_mistake_is_one_actionable_line(
    database_url: str, tmp_path: Path, command: str, mistake: str
) -> None:
    url, code, expected = _database_mistakes(database_url)[mistake]
    started = time.monotonic()
    result = _run(command, env={**QUICK, "DATABASE_URL": url, "JWT_SECRET": SECRET}, cwd=tmp_path)
    line = _one_line(result)
    assert result.returncode == code, line
    for words in expected:
        assert words in line
    assert "hunter2" not in result.stderr + result.stdout
    assert time.monotonic() - started < 15


def test_ssl_required_of_a_server_without_ssl_says_so(database_url: str, tmp_path: Path) -> None:
    # PgBouncer, with no TLS configured, stands in for a server without SSL, over TCP.
    with pgbouncer(as_service(database_url)) as url:
        with_ssl = make_url(url).update_query_dict({"sslmode": "require"})
        env = {**QUICK, "DATABASE_URL": with_ssl.render_as_string(hide_password=False)}
        result = _run("migrate", env=env, cwd=tmp_path)
    line = _one_line(result)
    assert result.returncode == 3
    assert "server does not support SSL" in line
    assert "remove sslmode=require" in line


@contextmanager
def _silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.mark.parametrize("command", ["migrate", "serve"])
def test_a_database_that_never_answers_is_given_up_on_with_one_line(
    tmp_path: Path, command: str
) -> None:
    with _silent_server() as port:
        env = {"DB_STARTUP_WAIT_SECONDS": "2", "DB_CONNECT_TIMEOUT_SECONDS": "1"}
        env |= {"DATABASE_URL": f"postgresql://app@127.0.0.1:{port}/tasks", "JWT_SECRET": SECRET}
        started = time.monotonic()
        result = _run(command, env=env, cwd=tmp_path, timeout=30)
        took = time.monotonic() - started
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 3
    assert lines[0].startswith("tasks-api: waiting up to 2 s (DB_STARTUP_WAIT_SECONDS)")
    assert f"127.0.0.1:{port}/tasks" in lines[-1]
    assert "timeout expired" in lines[-1]
    assert "Traceback" not in result.stderr
    assert took < 10


def test_migrate_waits_for_a_database_that_comes_up(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    target = make_url(database_url)
    late = target.set(host="127.0.0.1", port=port, query={})
    env = {"DATABASE_URL": late.render_as_string(hide_password=False)}
    env |= {"DB_STARTUP_WAIT_SECONDS": "30", "JWT_SECRET": SECRET}
    outcome: list[subprocess.CompletedProcess[str]] = []
    migrating = threading.Thread(target=lambda: outcome.append(_run("migrate", env=env)))
    migrating.start()
    time.sleep(2)  # refused until now
    with StallingProxy(database_url, port=port).running():
        migrating.join(timeout=40)
    assert outcome
    result = outcome[0]
    assert result.returncode == 0, result.stderr
    assert "waiting up to 30 s (DB_STARTUP_WAIT_SECONDS)" in result.stderr
    assert "database schema is up to date" in result.stdout


def test_an_unreachable_jwks_is_warned_about_at_start_with_its_url(database_url: str) -> None:
    jwks = f"http://127.0.0.1:{free_port()}/jwks"
    env = {
        "DATABASE_URL": as_service(database_url),
        "JWT_SECRET": SECRET,
        "JWT_JWKS_URL": jwks,
        "JWT_ISSUER": "https://issuer",
        "JWT_AUDIENCE": "tasks",
    }
    with service_process("--no-migrate", env=env) as service:
        output = service.output()
        assert httpx.get(f"{service.base_url}/healthz").status_code == 200
    assert f"warning: the JWKS at {jwks} (JWT_JWKS_URL) did not answer" in output


# --- .env ----------------------------------------------------------------------------------------


def test_a_dotenv_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    from_file = "dotenv-secret-" + "f" * 32
    from_environment = "environment-secret-" + "e" * 32
    (tmp_path / ".env").write_text(
        f"JWT_SECRET={from_file}\nDATABASE_URL=postgresql://u@127.0.0.1:1/x\nJWT_ISSUER=dotenv\n"
    )
    by_file = _run("token", "--sub", "s", env={}, cwd=tmp_path).stdout.strip()
    by_env = _run("token", "--sub", "s", env={"JWT_SECRET": from_environment}, cwd=tmp_path)

    assert jwt.decode(by_file, from_file, algorithms=["HS256"], issuer="dotenv")["sub"] == "s"
    token = by_env.stdout.strip()
    assert jwt.decode(token, from_environment, algorithms=["HS256"], issuer="dotenv")["sub"] == "s"


def _documented(path: Path) -> dict[str, str]:
    entries = re.findall(r"^# ([A-Z][A-Z0-9_]+)=(.*)$", path.read_text(), re.MULTILINE)
    return dict(entries)


def test_env_example_lists_every_setting_with_its_default() -> None:
    documented = _documented(ROOT / ".env.example")
    defaults = Settings.model_construct()
    for field in Settings.model_fields:
        variable = variable_of(field)
        assert variable in documented, variable
        value = getattr(defaults, field)
        if value is None or value == []:
            continue
        shown = documented[variable]
        assert shown.lower() in (
            str(value).lower(),
            f"{value:g}" if isinstance(value, float) else "",
        ), (variable, shown, value)


def test_the_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    for field in Settings.model_fields:
        assert f"`{variable_of(field)}`" in readme, variable_of(field)


# --- Tokens in embedded mode ----------------------------------------------------------------------


def test_token_never_invents_a_secret(tmp_path: Path) -> None:
    result = _run("token", "--sub", "s", env={}, cwd=tmp_path)
    line = _one_line(result)
    assert result.returncode == 2
    assert str((tmp_path / ".tasks-api" / "jwt-secret").resolve()) in line
    assert "tasks-api serve" in line
    assert not (tmp_path / ".tasks-api").exists()


def test_token_in_embedded_mode_signs_with_the_servers_secret(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "jwt-secret").write_text("s" * 64)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _run("token", "--sub", "me", env={"TASKS_API_DATA_DIR": str(data)}, cwd=elsewhere)
    assert jwt.decode(result.stdout.strip(), "s" * 64, algorithms=["HS256"])["sub"] == "me"


# --- The command line ----------------------------------------------------------------------------


def test_version_is_the_one_version_of_package_contract_and_changelog() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    result = _run("--version", env={})
    assert result.stdout.strip() == f"tasks-api {project['version']}"
    assert CONTRACT["info"]["version"] == project["version"]
    assert f"## {project['version']} " in (ROOT / "CHANGELOG.md").read_text()


def test_the_license_file_matches_the_package_metadata() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_help_answers_at_once_without_importing_the_service() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "service", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    took = time.monotonic() - started
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
    assert took < 1.0
    assert not {"sqlalchemy", "fastapi", "pydantic", "uvicorn", "psycopg"} & imported


def test_serve_help_shows_each_option_with_its_default_and_variable() -> None:
    text = " ".join(_run("serve", "--help", env={}).stdout.split())
    for option, variable, default in [
        ("--host", "TASKS_API_HOST", "127.0.0.1"),
        ("--port", "TASKS_API_PORT", "8000"),
        ("--workers", "TASKS_API_WORKERS", "1"),
        ("--log-level", "TASKS_API_LOG_LEVEL", "info"),
    ]:
        assert option in text
        assert f"(environment: {variable}) (default: {default})" in text


def test_serve_reload_serves(database_url: str) -> None:
    env = {"DATABASE_URL": as_service(database_url), "JWT_SECRET": SECRET}
    with service_process("--reload", "--no-migrate", env=env) as service:
        response = httpx.get(f"{service.base_url}/api/tasks", headers=bearer(_token(env)))
    assert response.status_code == 200


def _token(env: dict[str, str]) -> str:
    return _run("token", "--sub", "reloader", env=env).stdout.strip()


# --- Migrations you can write ---------------------------------------------------------------


def test_alembic_at_the_root_inspects_the_schema(database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    alembic = [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini")]

    current = subprocess.run(
        [*alembic, "current"], env=env, capture_output=True, text=True, check=False
    )
    check = subprocess.run(
        [*alembic, "check"], env=env, capture_output=True, text=True, check=False
    )

    assert current.returncode == 0, current.stderr
    assert "(head)" in current.stdout
    assert check.returncode == 0, check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


# --- Reproducible installs -------------------------------------------------------------------


def _locked(name: str) -> dict[str, tuple[str, int]]:
    """`requirements/<name>`: each package's pinned version and how many hashes it carries."""
    text = (ROOT / "requirements" / name).read_text()
    entries = re.findall(
        r"^([A-Za-z0-9._-]+)==(\S+)((?: \\\n\s+--hash=sha256:[0-9a-f]{64})+)", text, re.M
    )
    return {
        canonicalize_name(package): (version, hashes.count("--hash"))
        for package, version, hashes in entries
    }


@pytest.mark.parametrize(
    ("lock", "extras"), [("runtime.txt", []), ("test.txt", ["test"]), ("type.txt", [])]
)
def test_the_lock_files_pin_and_hash_every_dependency_within_its_declared_range(
    lock: str, extras: list[str]
) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(line) for line in project["dependencies"]]
    for extra in extras:
        declared += [Requirement(line) for line in project["optional-dependencies"][extra]]
    locked = _locked(lock)
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements/{lock}: run requirements/refresh.sh"
        version, hashes = locked[name]
        assert requirement.specifier.contains(version, prereleases=True), (name, version)
        assert hashes >= 1


def test_tox_and_its_readme_command_install_from_the_locks() -> None:
    tox = (ROOT / "tox.ini").read_text()
    for lock in ("lint.txt", "type.txt", "test.txt", "runtime.txt", "build.txt"):
        assert f"{{tox_root}}/requirements/{lock}" in tox, lock
    readme = (ROOT / "README.md").read_text()
    assert "pip install --require-hashes -r requirements/tox.txt && .venv/bin/tox" in readme
    assert "tox" in _locked("tox.txt")


def test_a_wrong_password_is_one_line_that_says_so(database_url: str, tmp_path: Path) -> None:
    # PgBouncer stands in for a server that checks passwords (the test server trusts all).
    with pgbouncer(as_service(database_url), client_password="the-right-one") as url:
        wrong = make_url(url).set(password="hunter2").render_as_string(hide_password=False)
        result = _run("migrate", env={**QUICK, "DATABASE_URL": wrong}, cwd=tmp_path)
    line = _one_line(result)
    assert result.returncode == 3
    assert "password authentication failed" in line
    assert "check the user name and password" in line
    assert "hunter2" not in result.stderr
