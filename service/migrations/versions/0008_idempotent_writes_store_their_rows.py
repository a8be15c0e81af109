"""idempotency keys store the rows their write returned, in the write's own statement

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

Until now a key's outcome (status, body, Location, ETag) was rendered by the service and
stored by a second statement of the write's transaction: two round trips and eight statements
per idempotent request. Now the write's statement claims the key itself and stores the rows
the write returned (`written`, as JSON: the answer is rendered from them again on a replay);
one autocommitted statement. The rendered-outcome columns stay, nullable, so keys stored the
old way are still replayed until they expire.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("idempotency_keys", sa.Column("written", postgresql.JSONB(), nullable=True))
    op.alter_column("idempotency_keys", "status", existing_type=sa.SmallInteger(), nullable=True)
    op.alter_column("idempotency_keys", "body", existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    # Keys stored the new way cannot be replayed by the old code: they go.
    op.execute("DELETE FROM idempotency_keys WHERE written IS NOT NULL")
    op.alter_column("idempotency_keys", "body", existing_type=sa.LargeBinary(), nullable=False)
    op.alter_column("idempotency_keys", "status", existing_type=sa.SmallInteger(), nullable=False)
    op.drop_column("idempotency_keys", "written")
