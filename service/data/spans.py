"""What the database's spans say, when tracing is on (OpenTelemetry's conventions for database
client spans): one span per statement, named for its operation and table (`SELECT tasks`),
with the statement's text, which holds `%(name)s` placeholders and never a value; and a span
for the wait for a pooled connection, when there was one (1 ms or more, or a failure), which
says nothing of the server (the statement after it does). The server's address, its port (when
not PostgreSQL's 5432, as the conventions ask) and the database's name come from
DATABASE_URL; its user and password never do.
"""

from collections.abc import Mapping

from service.config import Settings, driver_url
from service.data.sql import summary

POOL_WAIT_SPAN = "wait for a pooled connection"
# A wait shorter than this (a connection was free) gets no span: the span would cost more.
WAIT_SPAN_MIN_NS = 1_000_000
DEFAULT_PORT = 5432

_by_statement: dict[str, tuple[str, dict[str, str]]] = {}


def server_attributes(settings: Settings) -> dict[str, str | int]:
    url = driver_url(settings.require_database_url(), "psycopg", "DATABASE_URL")
    attributes: dict[str, str | int] = {"db.system.name": "postgresql"}
    if url.host:
        attributes["server.address"] = url.host
        if url.port not in (None, DEFAULT_PORT):  # the conventions: only another port
            attributes["server.port"] = url.port
    elif isinstance(url.query.get("host"), str):  # a Unix socket's directory
        attributes["server.address"] = str(url.query["host"])
    if url.database:
        attributes["db.namespace"] = url.database
    return attributes


def statement_span(sql: str, server: Mapping[str, str | int]) -> tuple[str, dict[str, str | int]]:
    """The span's name and attributes for one statement."""
    known = _by_statement.get(sql)
    if known is None:
        operation, table = summary(sql)
        attributes = {"db.operation.name": operation, "db.query.text": sql}
        if table is not None:
            attributes["db.collection.name"] = table
        known = _by_statement[sql] = (f"{operation} {table}" if table else operation, attributes)
    name, attributes = known
    return name, {**server, **attributes}
