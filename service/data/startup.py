"""What `serve` and `migrate` do before the first request, each step bounded in time and each
failure one line an operator can act on: which setting, which host and port (never the
password), what went wrong, and what to try.
"""

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg2
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from service.data.errors import describe_database_error

T = TypeVar("T")

# What libpq says when the server may simply not be up yet: worth waiting for. Anything else
# (a wrong password, a missing database, SSL refused) will not change by waiting.
_TRANSIENT = (
    "connection refused",
    "timeout expired",
    "timed out",
    "the database system is starting up",
    "the database system is shutting down",
    "no route to host",
    "network is unreachable",
)
_HINTS = (
    ("connection refused", "is PostgreSQL running there, and are the host and port right?"),
    (
        "timeout expired",
        "the host accepts connections but does not answer as PostgreSQL: "
        "check the host and port (a Neon compute wakes within seconds)",
    ),
    ("password authentication failed", "check the user name and password in the URL"),
    ("does not exist", "check the database and role names in the URL, or create them"),
    (
        "server does not support ssl",
        "remove sslmode=require from the URL, or enable SSL on the server",
    ),
    ("could not translate host name", "check the host name in the URL"),
    (
        "unsupported startup parameter",
        "the pooler refuses a startup option: remove `options` from the URL",
    ),
    (
        "no pg_hba.conf entry",
        "the server does not accept this user from this host "
        "(pg_hba.conf), or needs sslmode=require",
    ),
)


class StartupFailed(Exception):
    """Start-up cannot go on; the message is the one line to print."""


def where(url: URL) -> str:
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def explain(error: BaseException, setting: str, url: URL) -> str:
    message = describe_database_error(error).removeprefix("OperationalError: ")
    hint = next((hint for needle, hint in _HINTS if needle in message.lower()), "")
    return f"cannot use the database at {where(url)} ({setting}): {message}" + (
        f"; {hint}" if hint else ""
    )


def wait_for_database(url: URL, setting: str, *, wait: float, connect_timeout: int) -> None:
    """Return once the database accepts a connection; StartupFailed after `wait` seconds, or
    at once for a failure waiting cannot fix."""
    deadline = time.monotonic() + wait
    announced = False
    while True:
        try:
            parameters: dict[str, Any] = {
                "host": url.host,
                "port": url.port,
                "dbname": url.database,
                "user": url.username,
                "password": url.password,
                **{key: str(value) for key, value in url.query.items()},
                "connect_timeout": connect_timeout,
            }
            given = {key: value for key, value in parameters.items() if value is not None}
            psycopg2.connect(**given).close()
        except psycopg2.OperationalError as error:
            transient = any(needle in str(error).lower() for needle in _TRANSIENT)
            if not transient or time.monotonic() >= deadline:
                raise StartupFailed(explain(error, setting, url)) from None
            if not announced:
                reason = describe_database_error(error).removeprefix("OperationalError: ")
                print(
                    f"tasks-api: waiting up to {wait:g} s (DB_STARTUP_WAIT_SECONDS) for the "
                    f"database at {where(url)} ({setting}): {reason}",
                    file=sys.stderr,
                    flush=True,
                )
                announced = True
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            continue
        if announced:
            print(f"tasks-api: the database at {where(url)} answers", file=sys.stderr)
        return


def bounded(what: str, seconds: float, step: Callable[[], T], *, setting: str, url: URL) -> T:
    """`step()`, or StartupFailed naming `what` if it takes longer than `seconds` or fails
    with a database error."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(step())
        except BaseException as error:  # handed to the waiting thread below
            failure.append(error)

    # A thread, so that a step blocked inside the driver (a server that stopped answering)
    # can be given up on; it dies with the process.
    worker = threading.Thread(target=run, name=what, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise StartupFailed(
            f"{what} did not finish within {seconds:g} s on the database at {where(url)} "
            f"({setting}): it stopped answering, or another process holds a lock"
        )
    if failure:
        error = failure[0]
        if isinstance(error, DBAPIError | psycopg2.Error):
            raise StartupFailed(explain(error, setting, url)) from None
        raise error
    return outcome[0]
