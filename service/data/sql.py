"""Statements as the request path sends them: built with SQLAlchemy Core, compiled once.

A resource writes its statements against its tables, so column names and types come from one
place, and compiles each at import into the SQL text psycopg 3 runs, with `%(name)s`
parameters. Nothing of SQLAlchemy runs per request.

Compiling also records what each statement is (its operation and table), which names its span
when tracing is on (service.data.access): `SELECT tasks`, never the text's values, which are
never in the text.
"""

from sqlalchemy import Delete, Insert, Select, Update
from sqlalchemy.dialects.postgresql import psycopg
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement

# SQLAlchemy's dialect classes carry no type annotations on their constructors.
DIALECT: Dialect = psycopg.dialect()  # type: ignore[no-untyped-call]

# SQL text -> (operation, table or None), for every statement compiled here.
SUMMARIES: dict[str, tuple[str, str | None]] = {}


def compiled(statement: ClauseElement) -> str:
    """`statement` as SQL text for psycopg 3, its bound parameters named `%(name)s`."""
    sql = str(statement.compile(dialect=DIALECT))
    SUMMARIES[sql] = _summary(statement, sql)
    return sql


def summary(sql: str) -> tuple[str, str | None]:
    """What a statement does, and to which table: as compiled here, else its first word."""
    return SUMMARIES.get(sql) or _first_word(sql)


def _summary(statement: ClauseElement, sql: str) -> tuple[str, str | None]:
    table: object = None
    if isinstance(statement, Insert | Update | Delete):
        table = statement.table
    elif isinstance(statement, Select):
        froms = statement.get_final_froms()
        table = froms[0] if len(froms) == 1 else None
    name = getattr(table, "name", None)
    if name is not None:  # a plain str, not SQLAlchemy's quoted_name (a span attribute)
        name = str(name)
    for kind, operation in ((Insert, "INSERT"), (Update, "UPDATE"), (Delete, "DELETE")):
        if isinstance(statement, kind):
            return operation, name
    if isinstance(statement, Select):
        return "SELECT", name
    return _first_word(sql)


def _first_word(sql: str) -> tuple[str, str | None]:
    words = sql.split(None, 1)
    return (words[0].upper() if words else "SQL"), None
