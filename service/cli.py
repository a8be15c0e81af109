"""`tasks-api`: serve, migrate, and mint tokens for trying the API."""

import argparse
import os
import resource
import signal
import sys
import time
from collections.abc import Sequence

from sqlalchemy import NullPool, create_engine, make_url, text

from service.auth import issue_token
from service.config import ConfigError, Settings, driver_url
from service.db import ROLE_QUERY, migrate, rls_bypass_problem
from service.embedded import resolve, with_embedded_secret
from service.middleware import logging_config


def _describe_database(settings: Settings, original: Settings) -> str:
    url = make_url(settings.require_database_url()).render_as_string(hide_password=True)
    if original.embedded:
        return f"{url} (embedded PostgreSQL in {original.data_dir.resolve()})"
    return url


def _serve(args: argparse.Namespace) -> None:
    import uvicorn  # noqa: PLC0415 - only `serve` needs the server

    from service.server import server_options  # noqa: PLC0415 - it imports uvicorn

    original = Settings()
    settings = resolve(original)
    settings.check()  # refuse to start without strong secrets, before binding a port
    url = settings.require_database_url()
    _check_role(settings)
    if not args.no_migrate:
        migrate(settings.migration_url(), grant_to=settings.service_role_to_grant())
    # The app factory (in this process or in each worker) reads its settings from the
    # environment; in embedded mode, hand them the database that was started and the secret.
    os.environ["DATABASE_URL"] = url
    if settings.jwt_secret is not None:
        os.environ["JWT_SECRET"] = settings.jwt_secret.get_secret_value()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it; exiting normally on it
    # instead lets exit handlers run, which stop an embedded PostgreSQL this process started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _allow_open_files(settings.http_max_connections)
    print(f"tasks-api listening on http://{args.host}:{args.port} (docs at /docs)")
    print(f"database: {_describe_database(settings, original)}")
    print("get a token: tasks-api token --sub <user-id>")
    sys.stdout.flush()
    uvicorn.run(
        "service.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=logging_config(args.log_level),
        **server_options(),
        # The service logs each request itself, without the raw path and query.
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def _allow_open_files(max_connections: int) -> None:
    """Raise this process's open-file limit (inherited by workers) to fit HTTP_MAX_CONNECTIONS
    plus the database pool and the process's own files, as far as the hard limit allows."""
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


def _check_role(settings: Settings) -> None:
    """Refuse to serve as a role that row-level security does not bind (unless allowed)."""
    engine = create_engine(
        driver_url(settings.require_database_url(), "psycopg2", "DATABASE_URL"),
        poolclass=NullPool,
    )
    try:
        with engine.connect() as connection:
            problem = rls_bypass_problem(*connection.execute(text(ROLE_QUERY)).one())
    finally:
        engine.dispose()
    if problem and not settings.db_allow_rls_bypass:
        raise ConfigError(problem)
    if problem:
        print(f"tasks-api: warning: DB_ALLOW_RLS_BYPASS is set: {problem}", file=sys.stderr)


def _migrate(_: argparse.Namespace) -> None:
    settings = resolve(Settings())
    migrate(settings.migration_url(), grant_to=settings.service_role_to_grant())
    print("database schema is up to date")


def _token(args: argparse.Namespace) -> None:
    settings = with_embedded_secret(Settings())
    print(issue_token(settings, args.sub, args.ttl, int(time.time())))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tasks-api",
        description="Secure per-user task API. With DATABASE_URL unset, uses an embedded "
        "PostgreSQL in TASKS_API_DATA_DIR (default ./.tasks-api).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="apply migrations and serve the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--no-migrate", action="store_true", help="do not apply migrations")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(run=_serve)

    commands.add_parser("migrate", help="apply database migrations").set_defaults(run=_migrate)

    token = commands.add_parser("token", help="print a token signed with the configured secret")
    token.add_argument("--sub", required=True, help="the user: a UUID or any other subject")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.set_defaults(run=_token)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except ConfigError as error:
        print(f"tasks-api: configuration error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
