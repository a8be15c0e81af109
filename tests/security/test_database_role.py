"""Rule: the service refuses to serve as a database role that row-level security does not
bind (a superuser, a role with BYPASSRLS, a member of Neon's neon_superuser), unless the
operator says DB_ALLOW_RLS_BYPASS=1; and migrations give its role only what requests need."""

import logging
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text

from service.main import create_app
from tests.support.apps import make_settings
from tests.support.databases import (
    REQUEST_PRIVILEGES,
    as_service,
    fresh_database_on,
    service_role_privileges,
)
from tests.support.live import cli, service_process, serving
from tests.support.tokens import SECRET, bearer, mint


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = cli("serve", "--no-migrate", "--port", "1")  # refused before it binds a port
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def role_url(database_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A login role with the attributes the test's parameter names, on the test database."""
    attributes, membership = request.param
    name = f"tasks_api_probe_{abs(hash(request.node.name)) % 10**8}"
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP ROLE IF EXISTS {name}"))
        connection.execute(text(f"CREATE ROLE {name} LOGIN {attributes} PASSWORD 'probe'"))
        connection.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON users, tasks TO {name}"))
        created_neon_role = False
        if membership:
            exists = connection.execute(
                text("SELECT 1 FROM pg_roles WHERE rolname = 'neon_superuser'")
            ).first()
            if exists is None:
                connection.execute(text("CREATE ROLE neon_superuser NOLOGIN"))
                created_neon_role = True
            connection.execute(text(f"GRANT neon_superuser TO {name}"))
    try:
        yield (
            make_url(database_url)
            .set(username=name, password="probe")
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"REVOKE ALL ON users, tasks FROM {name}"))
            connection.execute(text(f"DROP ROLE IF EXISTS {name}"))
            if created_neon_role:
                connection.execute(text("DROP ROLE neon_superuser"))
        admin.dispose()


REFUSED_ROLES = [
    (("SUPERUSER", False), "is a superuser"),
    (("NOSUPERUSER BYPASSRLS", False), "has BYPASSRLS"),
    (("NOSUPERUSER NOBYPASSRLS", True), "is a member of neon_superuser"),
]


@pytest.mark.parametrize(
    ("role_url", "why"),
    REFUSED_ROLES,
    indirect=["role_url"],
    ids=["superuser", "bypassrls", "neon_superuser member"],
)
def test_serve_refuses_a_role_that_bypasses_row_level_security(role_url: str, why: str) -> None:
    result = _serve({"DATABASE_URL": role_url, "JWT_SECRET": SECRET})
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("tasks-api: configuration error: the database role ")
    assert why in line
    assert "NOSUPERUSER NOBYPASSRLS" in line  # says what to do instead
    assert "DB_ALLOW_RLS_BYPASS=1" in line


@pytest.mark.parametrize("role_url", [("SUPERUSER", False)], indirect=True, ids=["superuser"])
def test_db_allow_rls_bypass_serves_anyway_and_says_so(role_url: str) -> None:
    env = {"DATABASE_URL": role_url, "JWT_SECRET": SECRET, "DB_ALLOW_RLS_BYPASS": "1"}
    with service_process("--no-migrate", env=env) as service:
        listed = httpx.get(f"{service.base_url}/api/tasks", headers=bearer(mint()))
        output = service.output()
    assert listed.status_code == 200
    assert "DB_ALLOW_RLS_BYPASS is set: the database role" in output


@pytest.mark.parametrize("role_url", [("SUPERUSER", False)], indirect=True, ids=["superuser"])
def test_an_app_given_such_a_role_never_uses_it(
    role_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Checked on every new connection too, for apps started by other means than `serve`.
    caplog.set_level(logging.WARNING, logger="service")
    with serving(create_app(make_settings(role_url))) as url, httpx.Client(base_url=url) as api:
        response = api.get("/api/tasks", headers=bearer(mint()))
    assert response.status_code == 503
    assert any("is a superuser" in record.getMessage() for record in caplog.records)


def test_migrate_grants_the_service_role_what_requests_need_when_the_urls_differ(
    database_url: str,
) -> None:
    with fresh_database_on(database_url) as admin_url:
        admin = admin_url.render_as_string(hide_password=False)
        env = {"DATABASE_URL": as_service(admin), "MIGRATION_DATABASE_URL": admin}
        result = subprocess.run(
            cli("migrate"), env=env, capture_output=True, text=True, timeout=120, check=False
        )
        engine = create_engine(admin_url)
        granted = service_role_privileges(engine)
        engine.dispose()
    assert result.returncode == 0, result.stderr
    assert granted == REQUEST_PRIVILEGES
