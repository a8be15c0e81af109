"""purge expired idempotency keys by an index range, not by a walk of every key

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

0006's purge compared `expires_at` with `clock_timestamp()`, which is volatile: PostgreSQL
cannot use it as an index bound, so every call walked the whole expires_at index, past every
key that had not expired, and each idempotent request cost time in proportion to the number
of stored keys (2.8 ms of database CPU per request at a few thousand keys). The statement's
start time (`statement_timestamp()`, stable) is a bound: the walk stops at the first key that
has not expired. A key expiring during the statement waits for the next purge.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PURGE = """
CREATE OR REPLACE FUNCTION tasks_api_purge_idempotency_keys(batch integer) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH expired AS (
        SELECT user_id, key FROM idempotency_keys
        WHERE expires_at <= {now}
        ORDER BY expires_at LIMIT batch FOR UPDATE SKIP LOCKED
    ), removed AS (
        DELETE FROM idempotency_keys AS k USING expired
        WHERE k.user_id = expired.user_id AND k.key = expired.key
        RETURNING 1
    )
    SELECT count(*)::integer FROM removed
$$
"""


def upgrade() -> None:
    op.execute(_PURGE.format(now="statement_timestamp()"))


def downgrade() -> None:
    op.execute(_PURGE.format(now="clock_timestamp()"))
