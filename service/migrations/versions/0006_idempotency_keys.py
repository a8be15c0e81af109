"""idempotency keys: each user's claimed keys and the outcomes to replay, bound by RLS

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

Row-level security binds the table like the others: a statement sees the keys of the user its
transaction names, and no other. Expired keys of every user are removed in small batches by
`tasks_api_purge_idempotency_keys`, which requests call; it runs as the table's owner
(SECURITY DEFINER), and one more policy lets that owner, and no one else, reach rows that have
expired.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CURRENT_USER = "(SELECT NULLIF(current_setting('tasks_api.user_id', true), '')::uuid)"
_PURGE = """
CREATE FUNCTION tasks_api_purge_idempotency_keys(batch integer) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH expired AS (
        SELECT user_id, key FROM idempotency_keys
        WHERE expires_at <= clock_timestamp()
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
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("location", sa.String(), nullable=True),
        sa.Column("etag", sa.String(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "key"),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])
    op.execute("ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY idempotency_keys_of_the_current_user ON idempotency_keys "
        f"USING (user_id = {_CURRENT_USER}) WITH CHECK (user_id = {_CURRENT_USER})"
    )
    # The owner (the role running this migration) reaches expired rows, for the purge.
    op.execute(
        "CREATE POLICY idempotency_keys_expired_for_the_owner ON idempotency_keys "
        "TO CURRENT_USER USING (expires_at <= clock_timestamp())"
    )
    op.execute(_PURGE)


def downgrade() -> None:
    op.execute("DROP FUNCTION tasks_api_purge_idempotency_keys(integer)")
    op.drop_table("idempotency_keys")
