"""What can go wrong with the database on the request path, and how to say it in one line."""

import re

import psycopg

from service.data.roles import RoleBypassesRowSecurity


class DeadlineExceeded(Exception):
    """The request's database budget, or its statement's, ran out."""


class ConnectFailed(Exception):
    """No pooled connection could be had because opening one failed; `cause` says why."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


# Errors that mean "not now" (503): connections refused or dropped, a pool with no connection
# to give within DB_POOL_TIMEOUT_SECONDS (psycopg_pool.PoolTimeout is an OperationalError),
# statements cancelled at their deadline, and a role that row-level security would not bind.
# Any other psycopg.Error is a bug: a 500.
UNAVAILABLE: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    DeadlineExceeded,
    ConnectFailed,
    RoleBypassesRowSecurity,
)

# libpq does not put passwords in its messages; these catch a URL or conninfo echoed anyway.
_PASSWORD_IN_CONNINFO = re.compile(r"(password\s*=\s*)\S+", re.IGNORECASE)
_PASSWORD_IN_URL = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def root_cause(error: BaseException) -> BaseException:
    """The error that says what happened: the driver's own, not a wrapper around it."""
    if isinstance(error, ConnectFailed):
        return error.cause
    orig = getattr(error, "orig", None)  # SQLAlchemy's wrapper (migrations, the CLI)
    return orig if isinstance(orig, BaseException) else error


def describe_database_error(error: BaseException) -> str:
    """One log line's worth of what went wrong: the server's or driver's own message (which
    names host, port and cause), never a password."""
    if isinstance(error, DeadlineExceeded):
        return "the database did not answer within the request's deadline"
    cause = root_cause(error)
    message = " ".join(str(cause).split()).split(" (Background on this error at:")[0]
    message = _PASSWORD_IN_URL.sub(r"\1***@", _PASSWORD_IN_CONNINFO.sub(r"\1***", message))
    return f"{type(cause).__name__}: {message or 'no message'}"
