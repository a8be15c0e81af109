"""Idempotency keys: one write per (user, key), its outcome stored with it, for retries.

The first request with a key claims it and runs its write in one transaction; the outcome
(status, body, Location, ETag) is stored in the same transaction, so both are committed or
neither is, on any instance and through a transaction-mode pooler. A concurrent request with
the same key waits on the claim (PostgreSQL's row lock on the key), then finds the stored
outcome and replays it: N concurrent requests with one key make one change. Only successes
are stored: a request that failed wrote nothing, so its retry runs again.

Two round trips: (1) begin, claim, read any stored outcome, and run the write, all pipelined;
(2) store the outcome and commit, or roll back (the key was already taken, or the write
failed). A write whose claim lost is rolled back, so it is never seen.
"""

import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Column, DateTime, Index, LargeBinary, SmallInteger, String, text
from sqlmodel import Field, SQLModel

KEY_MAX_CHARS = 255
# Expired keys removed by each request that uses one, across all users: bounded work per
# request, and no scheduler to run.
PURGE_BATCH = 50


class IdempotencyKey(SQLModel, table=True):
    """A claimed key and, once its write committed, the outcome to replay."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    user_id: uuid.UUID = Field(primary_key=True)
    key: str = Field(primary_key=True, max_length=KEY_MAX_CHARS)
    # sha256 of the request (method, route, resource, canonical body): the same key with
    # another request is refused, never replayed.
    fingerprint: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status: int = Field(sa_column=Column(SmallInteger, nullable=False))
    body: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    location: str | None = Field(default=None, sa_column=Column(String, nullable=True))
    etag: str | None = Field(default=None, sa_column=Column(String, nullable=True))
    created_at: datetime = Field(
        sa_column=Column(
            DateTime(timezone=True), nullable=False, server_default=text("clock_timestamp()")
        )
    )
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


# The claim: a new key, or an expired one taken over. A key someone else holds (or stored)
# is locked until that transaction ends, then left as it is: no row comes back.
_CLAIM = (
    "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, body, expires_at) "
    "VALUES (%(owner)s, %(key)s, %(fingerprint)s, 0, '', "
    "clock_timestamp() + %(ttl)s * interval '1 second') "
    "ON CONFLICT (user_id, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, status = 0, "
    "body = '', location = NULL, etag = NULL, created_at = clock_timestamp(), "
    "expires_at = EXCLUDED.expires_at WHERE idempotency_keys.expires_at <= clock_timestamp() "
    "RETURNING true"
)
_STORED = (
    "SELECT fingerprint, status, body, location, etag FROM idempotency_keys "
    "WHERE user_id = %(owner)s AND key = %(key)s"
)
_STORE = (
    "UPDATE idempotency_keys SET status = %(status)s, body = %(body)s, location = %(location)s, "
    "etag = %(etag)s WHERE user_id = %(owner)s AND key = %(key)s"
)
_PURGE = "SELECT tasks_api_purge_idempotency_keys(%(batch)s)"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a write answered: replayed, byte for byte, to a retry with the same key."""

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


Row = tuple[Any, ...]


class Replay(Exception):
    """The key already holds this request's outcome: raised out of the transaction, so that
    the write run alongside the claim is rolled back, and answered with `outcome`."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__()
        self.outcome = outcome


async def claim_and_write(
    connection: psycopg.AsyncConnection[Any],
    pipeline: psycopg.AsyncPipeline,
    *,
    owner: str,
    claim: Claim,
    write: tuple[str, Mapping[str, Any]],
    respond: Callable[[list[Row]], Outcome],
) -> Outcome:
    """Within a pipelined transaction on `connection` (row-level security and the statement
    timeout set for `owner`): the outcome of `write`, stored under `claim`. `respond` turns
    the write's rows into the outcome, or raises (nothing is stored; the caller's transaction
    rolls the write back). Raises Replay, or KeyReused when the key holds another request."""
    names = {"owner": owner, "key": claim.key}
    sql, parameters = write
    purge, claimed, stored, written = (connection.cursor() for _ in range(4))
    await purge.execute(_PURGE, {"batch": PURGE_BATCH})
    await claimed.execute(
        _CLAIM, {**names, "fingerprint": claim.fingerprint, "ttl": claim.ttl_seconds}
    )
    await stored.execute(_STORED, names)
    await written.execute(sql, parameters)
    await pipeline.sync()  # the first round trip: everything above
    if await claimed.fetchone() is None:
        row = await stored.fetchone()
        assert row is not None  # noqa: S101 - the claim lost to this very row
        fingerprint, status, body, location, etag = row
        if bytes(fingerprint) != claim.fingerprint:
            raise KeyReused
        raise Replay(Outcome(status, bytes(body), location, etag))
    outcome = respond(await written.fetchall())
    # Queued: it goes out with the COMMIT, in the second round trip.
    await connection.execute(
        _STORE,
        {
            **names,
            "status": outcome.status,
            "body": outcome.body,
            "location": outcome.location,
            "etag": outcome.etag,
        },
    )
    return outcome
