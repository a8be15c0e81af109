"""`tasks-api`: serve, migrate, inspect the schema, and mint tokens for trying the API.

Arguments are parsed before anything heavy is imported, so `--help` and `--version` answer
at once. Exit codes: 0 done; 2 a setting or an argument is invalid or unsafe; 3 the database
could not be reached or used at start; 4 `serve` cannot listen on its address. Every failure
is one line on stderr.
"""

import argparse
import os
import sys
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.config import Settings

EXIT_CONFIG = 2
EXIT_DATABASE = 3
EXIT_LISTEN = 4
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _describe_database(settings: "Settings", original: "Settings") -> str:
    from sqlalchemy import make_url  # noqa: PLC0415

    url = make_url(settings.require_database_url()).render_as_string(hide_password=True)
    if original.embedded:
        return f"{url} (embedded PostgreSQL in {original.data_dir.resolve()})"
    return url


def _ready_database(settings: "Settings", *, serving: bool) -> None:
    """Wait for the databases this command uses: where migrations run, and, to serve,
    DATABASE_URL."""
    from service.config import driver_url  # noqa: PLC0415
    from service.data.startup import wait_for_database  # noqa: PLC0415

    urls = {}
    if serving or settings.migration_database_url is None:
        urls["DATABASE_URL"] = driver_url(
            settings.require_database_url(), "psycopg2", "DATABASE_URL"
        )
    if settings.migration_database_url is not None:
        urls["MIGRATION_DATABASE_URL"] = settings.migration_url()
    for setting, url in urls.items():
        wait_for_database(
            url,
            setting,
            wait=settings.db_startup_wait_seconds,
            connect_timeout=settings.db_connect_timeout_seconds,
        )


def _migrate_bounded(settings: "Settings") -> None:
    from service.data.admin import migrate  # noqa: PLC0415
    from service.data.startup import bounded  # noqa: PLC0415
    from service.schema import metadata  # noqa: PLC0415

    setting = "MIGRATION_DATABASE_URL" if settings.migration_database_url else "DATABASE_URL"
    url = settings.migration_url()
    bounded(
        "applying migrations",
        settings.db_migration_timeout_seconds,
        lambda: migrate(
            url,
            metadata,
            grant_to=settings.service_role_to_grant(),
            connect_timeout=settings.db_connect_timeout_seconds,
        ),
        setting=setting,
        url=url,
    )


def _resolved() -> tuple["Settings", "Settings"]:
    """The settings as given, and as ready to serve (embedded database started if unset)."""
    from service.config import load_settings  # noqa: PLC0415
    from service.data.embedded import resolve  # noqa: PLC0415

    original = load_settings()
    return original, resolve(original)


def _serve(args: argparse.Namespace) -> None:
    import signal  # noqa: PLC0415

    import uvicorn  # noqa: PLC0415 - only `serve` needs the server

    from service.http.logs import logging_config  # noqa: PLC0415
    from service.http.server import server_options  # noqa: PLC0415 - it imports uvicorn

    _check_listen(args.host, args.port)
    original, settings = _resolved()
    settings.check()  # refuse to start without strong secrets, before binding a port
    url = settings.require_database_url()
    _ready_database(settings, serving=True)
    _check_role(settings)
    if not args.no_migrate:
        _migrate_bounded(settings)
    _warn_if_jwks_unreachable(settings)
    # The app factory (in this process or in each worker) reads its settings from the
    # environment; in embedded mode, hand them the database that was started and the secret.
    os.environ["DATABASE_URL"] = url
    if settings.jwt_secret is not None:
        os.environ["JWT_SECRET"] = settings.jwt_secret.get_secret_value()
    _allow_open_files(settings.http_max_connections)
    if settings.metrics_token is not None and args.workers > 1 and not args.reload:
        _share_metrics_between_workers()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it; exiting normally on it
    # instead lets exit handlers run, which stop an embedded PostgreSQL this process started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"tasks-api {version('secure-tasks-api')} listening on http://{args.host}:{args.port}")
    print(f"docs: http://{args.host}:{args.port}/docs")
    print(f"database: {_describe_database(settings, original)}")
    print("get a token: tasks-api token --sub <user-id>")
    sys.stdout.flush()
    reload: dict[str, Any] = {}
    if args.reload:
        # Development only: one process that restarts when a file of the package changes.
        reload = {"reload": True, "reload_dirs": [str(Path(__file__).resolve().parent)]}
    uvicorn.run(
        "service.main:create_served_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=None if args.reload else args.workers,
        log_level=args.log_level,
        log_config=logging_config(args.log_level),
        # The service logs each request itself, without the raw path and query.
        access_log=False,
        timeout_graceful_shutdown=10,
        **server_options(),
        **reload,
    )


class CannotListen(Exception):
    """`serve` cannot bind its address; the message is the line to print."""


def _check_listen(host: str, port: int) -> None:
    """Fail in one line, before anything starts, if the address cannot be listened on."""
    import socket  # noqa: PLC0415

    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        raise CannotListen(
            f"cannot listen on {host}:{port} (--host/--port, TASKS_API_HOST/TASKS_API_PORT): "
            f"{error.strerror or error}"
        ) from None


def _share_metrics_between_workers() -> None:
    """Workers write their metrics to files in one directory, and a scrape answered by any of
    them adds all up (prometheus-client's multiprocess mode); a fresh directory per start."""
    import atexit  # noqa: PLC0415
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from service.metrics import MULTIPROCESS_DIR  # noqa: PLC0415

    if not os.environ.get(MULTIPROCESS_DIR):
        directory = tempfile.mkdtemp(prefix="tasks-api-metrics-")
        os.environ[MULTIPROCESS_DIR] = directory
        atexit.register(shutil.rmtree, directory, ignore_errors=True)


def _allow_open_files(max_connections: int) -> None:
    """Raise this process's open-file limit (inherited by workers) to fit HTTP_MAX_CONNECTIONS
    plus the database pool and the process's own files, as far as the hard limit allows."""
    import resource  # noqa: PLC0415

    wanted = max_connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
        if ceiling < wanted:
            print(
                f"tasks-api: warning: the open-file limit ({hard}) is below "
                f"HTTP_MAX_CONNECTIONS + 256 ({wanted}); lower HTTP_MAX_CONNECTIONS or raise "
                "`ulimit -n`",
                file=sys.stderr,
            )


def _warn_if_jwks_unreachable(settings: "Settings") -> None:
    url = settings.jwks_url()
    if url is None:
        return
    import httpx  # noqa: PLC0415

    try:
        httpx.get(url, timeout=settings.jwks_fetch_timeout_seconds).raise_for_status()
    except httpx.HTTPError as error:
        print(
            f"tasks-api: warning: the JWKS at {url} (JWT_JWKS_URL) did not answer "
            f"({type(error).__name__}: {error}); tokens from that issuer get 503 until it does",
            file=sys.stderr,
        )


def _check_role(settings: "Settings") -> None:
    """Refuse to serve as a role that row-level security does not bind (unless allowed)."""
    from sqlalchemy import NullPool, create_engine, text  # noqa: PLC0415

    from service.config import ConfigError, driver_url  # noqa: PLC0415
    from service.data.roles import ROLE_QUERY, rls_bypass_problem  # noqa: PLC0415
    from service.data.startup import bounded  # noqa: PLC0415

    url = driver_url(settings.require_database_url(), "psycopg2", "DATABASE_URL")
    engine = create_engine(
        url,
        poolclass=NullPool,
        connect_args={"connect_timeout": settings.db_connect_timeout_seconds},
    )

    def role_problem() -> str:
        with engine.connect() as connection:
            return rls_bypass_problem(*connection.execute(text(ROLE_QUERY)).one())

    try:
        timeout = settings.db_connect_timeout_seconds + 10
        problem = bounded(
            "checking the role", timeout, role_problem, setting="DATABASE_URL", url=url
        )
    finally:
        engine.dispose()
    if problem and not settings.db_allow_rls_bypass:
        raise ConfigError(problem)
    if problem:
        print(f"tasks-api: warning: DB_ALLOW_RLS_BYPASS is set: {problem}", file=sys.stderr)


def _migrate(_: argparse.Namespace) -> None:
    settings = _resolved()[1]
    _ready_database(settings, serving=False)
    _migrate_bounded(settings)
    print("database schema is up to date")


def _token(args: argparse.Namespace) -> None:
    from service.auth.tokens import issue_token  # noqa: PLC0415
    from service.config import load_settings  # noqa: PLC0415
    from service.data.embedded import with_existing_embedded_secret  # noqa: PLC0415

    settings = with_existing_embedded_secret(load_settings())
    print(issue_token(settings, args.sub, args.ttl, int(time.time())))


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="tasks-api",
        description="Secure per-user task API. Settings come from environment variables and "
        "a .env file in the working directory (the environment wins); with DATABASE_URL "
        "unset, an embedded PostgreSQL runs in TASKS_API_DATA_DIR (default ./.tasks-api). "
        "Every setting, with its default, is in .env.example and the README.",
        epilog="exit codes: 0 done, 2 invalid or unsafe setting or argument, "
        "3 database unreachable or unusable at start, 4 cannot listen on the address",
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="wait for the database, apply migrations and serve the API",
        description="Wait for the database (DB_STARTUP_WAIT_SECONDS), check that row-level "
        "security binds the serving role, apply migrations, and serve the API with uvicorn.",
        formatter_class=formatter,
    )
    _option(serve, "--host", "TASKS_API_HOST", "127.0.0.1", "address to listen on")
    _option(serve, "--port", "TASKS_API_PORT", 8000, "port to listen on", type=_port)
    _option(serve, "--workers", "TASKS_API_WORKERS", 1, "worker processes", type=_positive)
    _option(serve, "--log-level", "TASKS_API_LOG_LEVEL", "info", "log level", choices=LOG_LEVELS)
    serve.add_argument("--no-migrate", action="store_true", help="do not apply migrations")
    serve.add_argument(
        "--reload",
        action="store_true",
        help="development: one process that restarts when the service's code changes",
    )
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser(
        "migrate",
        help="apply database migrations",
        description="Apply migrations as MIGRATION_DATABASE_URL (or DATABASE_URL), granting "
        "DATABASE_URL's role what requests need when the two differ. To see the current "
        "revision or write a new one, use alembic with the alembic.ini at the repository's "
        "root (README, 'Migrations').",
        formatter_class=formatter,
    )
    migrate.set_defaults(run=_migrate)

    token = commands.add_parser(
        "token",
        help="print a token signed with the configured secret",
        description="Print an HS256 token for trying the API, signed with JWT_SECRET (or, in "
        "embedded mode, the secret `tasks-api serve` stored in TASKS_API_DATA_DIR).",
        formatter_class=formatter,
    )
    token.add_argument("--sub", required=True, help="the user: a UUID or any other subject")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.set_defaults(run=_token)
    return parser


def _option(
    parser: argparse.ArgumentParser,
    flag: str,
    variable: str,
    default: object,
    help_text: str,
    **kwargs: Any,
) -> None:
    """An option whose default an environment variable (or `.env`) may set; --help names both."""
    parser.add_argument(
        flag,
        default=os.environ.get(variable, _dotenv().get(variable) or default),
        help=f"{help_text} (environment: {variable})",
        **kwargs,
    )


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (0-65535)")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _dotenv() -> dict[str, str | None]:
    """`.env` in the working directory, read as the settings read it (the environment wins)."""
    if not Path(".env").is_file():
        return {}
    from dotenv import dotenv_values  # noqa: PLC0415

    return dotenv_values(".env")


def _version() -> str:
    try:
        return version("secure-tasks-api")
    except PackageNotFoundError:  # a source tree that is not installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    from service.config import ConfigError  # noqa: PLC0415
    from service.data.startup import StartupFailed  # noqa: PLC0415

    try:
        args.run(args)
    except ConfigError as error:
        for line in str(error).splitlines():
            print(f"tasks-api: configuration error: {line}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    except StartupFailed as error:
        print(f"tasks-api: {error}", file=sys.stderr)
        raise SystemExit(EXIT_DATABASE) from None
    except CannotListen as error:
        print(f"tasks-api: {error}", file=sys.stderr)
        raise SystemExit(EXIT_LISTEN) from None
