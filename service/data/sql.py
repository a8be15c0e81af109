"""Statements as the request path sends them: built with SQLAlchemy Core, compiled once.

A resource writes its statements against its tables, so column names and types come from one
place, and compiles each at import into the SQL text psycopg 3 runs, with `%(name)s`
parameters. Nothing of SQLAlchemy runs per request.
"""

from sqlalchemy.dialects.postgresql import psycopg
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

# SQLAlchemy's dialect classes carry no type annotations on their constructors.
DIALECT: Dialect = psycopg.dialect()  # type: ignore[no-untyped-call]


def compiled(statement: ClauseElement) -> str:
    """`statement` as SQL text for psycopg 3, its bound parameters named `%(name)s`."""
    return str(statement.compile(dialect=DIALECT))
