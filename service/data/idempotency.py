"""Idempotency keys: one write per (user, key), stored with the rows it returned, for retries.

An idempotent write is one autocommitted statement (`idempotent`): the write, and a claim of
the key that stores the rows the write returned, in the same statement. So the key is stored
exactly when the write is, on any instance and through a transaction-mode pooler, and only
successes are stored (a write that returned no row stores nothing: its retry runs again).
The answer is rendered from those rows the first time, and from the stored rows on a replay,
by the same code: the same bytes.

The key is the table's primary key, and the claim a plain INSERT. A key already stored makes
the statement fail (a unique violation), which undoes the write; a concurrent request with
the same key waits on the first one's row until it commits, then fails the same way: N
concurrent requests with one key make one change. The service then reads the stored rows
(`Idempotent.replay`) and answers with them, or with a 422 when the key was used for another
request. A key past its time to live is removed and the write runs again.

Expired keys of every user are removed in batches (`PURGE`), at most once a second per
process while fewer than a batch are waiting, by the request that finds the purge due.
"""

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CTE,
    Column,
    DateTime,
    Float,
    Index,
    LargeBinary,
    Select,
    SmallInteger,
    String,
    Table,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.dml import ReturningInsert, ReturningUpdate
from sqlalchemy.sql.elements import ColumnClause
from sqlmodel import Field, SQLModel

from service.data.sql import DIALECT as _DIALECT
from service.data.sql import compiled

KEY_MAX_CHARS = 255
# Expired keys removed by one purge, across all users.
PURGE_BATCH = 200
# While fewer than a batch of expired keys are left, a process purges at most this often.
PURGE_INTERVAL_SECONDS = 1.0


class IdempotencyKey(SQLModel, table=True):
    """A key, claimed by the write it was sent with, and the rows that write returned."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    user_id: uuid.UUID = Field(primary_key=True)
    key: str = Field(primary_key=True, max_length=KEY_MAX_CHARS)
    # sha256 of the request (method, route, resource, canonical body): the same key with
    # another request is refused, never replayed.
    fingerprint: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # The rows the write returned, as JSON objects of its table's columns (migration 0008).
    written: list[dict[str, Any]] | None = Field(
        default=None, sa_column=Column(JSONB, nullable=True)
    )
    # The rendered answer, as keys stored before migration 0008 hold it.
    status: int | None = Field(default=None, sa_column=Column(SmallInteger, nullable=True))
    body: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    location: str | None = Field(default=None, sa_column=Column(String, nullable=True))
    etag: str | None = Field(default=None, sa_column=Column(String, nullable=True))
    created_at: datetime = Field(
        sa_column=Column(
            DateTime(timezone=True), nullable=False, server_default=text("clock_timestamp()")
        )
    )
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


_KEYS: Table = IdempotencyKey.__table__  # type: ignore[attr-defined]
PRIMARY_KEY = "idempotency_keys_pkey"
PURGE = "SELECT tasks_api_purge_idempotency_keys(%(batch)s)"
# An expired key found in the way of a new request: removed, so that the write can run again.
FORGET_EXPIRED = (
    "DELETE FROM idempotency_keys WHERE user_id = %(owner)s AND key = %(claim_key)s "
    "AND expires_at <= statement_timestamp() RETURNING key"
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a write answered, rendered from its rows: the same bytes on a replay."""

    status: int
    body: bytes
    location: str | None = None
    etag: str | None = None


class KeyReused(Exception):
    """The key was used before for a different request."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A request's key and what it asks: the fingerprint tells a retry from another request."""

    key: str
    fingerprint: bytes
    ttl_seconds: float

    @staticmethod
    def fingerprint_of(*parts: bytes) -> bytes:
        digest = hashlib.sha256()
        for part in parts:
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
        return digest.digest()

    def parameters(self, owner: str) -> dict[str, Any]:
        """The claim's parameters of an idempotent statement."""
        return {
            "owner": owner,
            "claim_key": self.key,
            "claim_fingerprint": self.fingerprint,
            "claim_ttl": self.ttl_seconds,
        }


Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Stored:
    """A key as stored: whose request it was, whether it expired, and what to answer."""

    fingerprint: bytes
    expired: bool
    rows: list[Row]  # the write's rows, in its RETURNING order
    rendered: Outcome | None  # a key stored before migration 0008


@dataclass(frozen=True, slots=True)
class Idempotent:
    """An idempotent write, compiled: the statement that writes and claims the key, and the
    one that reads a stored key back (`stored`)."""

    sql: str
    replay: str

    def stored(self, rows: list[Row]) -> Stored | None:
        if not rows:
            return None
        fingerprint, expired, status, body, location, etag = rows[0][:6]
        rendered = None
        if status is not None:
            rendered = Outcome(status, bytes(body), location, etag)
        return Stored(bytes(fingerprint), expired, [row[6:] for row in rows], rendered)


def idempotent(
    write: ReturningInsert[Any] | ReturningUpdate[Any],
    answer: Callable[[CTE], Select[Any]] | None = None,
) -> Idempotent:
    """`write` (an INSERT or UPDATE ... RETURNING of whole or partial rows of one table) as one
    statement that also claims the key, storing the rows it returned. `answer` shapes what
    the statement answers from the write (the CTE `written`); by default, the write's rows.
    Parameters: the write's, plus `Claim.parameters`."""
    written = write.cte("written")
    rows = func.jsonb_agg(func.to_jsonb(literal_column(written.name)))
    expires_at = func.statement_timestamp() + bindparam("claim_ttl", type_=Float) * text(
        "interval '1 second'"
    )
    claimed = (
        insert(_KEYS)
        .from_select(
            ["user_id", "key", "fingerprint", "expires_at", "written"],
            select(
                bindparam("owner", type_=_KEYS.c.user_id.type),
                bindparam("claim_key", type_=_KEYS.c.key.type),
                bindparam("claim_fingerprint", type_=_KEYS.c.fingerprint.type),
                expires_at,
                rows,
            )
            .select_from(written)
            .having(func.count() > literal_column("0")),  # nothing written: nothing claimed
        )
        .returning(_KEYS.c.key)
        .cte("claimed")
    )
    statement = (answer(written) if answer is not None else select(written)).add_cte(claimed)
    table = write.table
    assert isinstance(table, Table)  # noqa: S101 - a write of one table
    return Idempotent(compiled(statement), _replay(table, list(written.c.keys())))


def _replay(table: Table, columns: list[str]) -> str:
    """A stored key: its fingerprint, whether it expired, a rendered answer (old keys), and
    the written rows, typed again as the table's columns (one row of NULLs for old keys)."""
    keys = _KEYS.alias("k")
    row_type: ColumnClause[Any] = literal_column(
        f"NULL::{_DIALECT.identifier_preparer.quote(table.name)}"
    )
    written = (
        func.jsonb_populate_recordset(row_type, keys.c.written).table_valued(*columns).lateral("r")
    )
    replay = (
        select(
            keys.c.fingerprint,
            keys.c.expires_at <= func.statement_timestamp(),
            keys.c.status,
            keys.c.body,
            keys.c.location,
            keys.c.etag,
            *(written.c[column] for column in columns),
        )
        .select_from(keys.outerjoin(written, true()))
        .where(keys.c.user_id == bindparam("owner"), keys.c.key == bindparam("claim_key"))
    )
    return compiled(replay)
