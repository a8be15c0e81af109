"""U+2800 BRAILLE PATTERN BLANK alone is not a visible title

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05

The API refused a title of nothing but U+2800 after 1.1.0 shipped; a database migrated by
1.1.0's 0003 still allowed it. This revision brings such databases to the rule: titles that
show nothing under it are renamed, and ck_tasks_title_visible is recreated with U+2800 among
the invisible characters.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, not imported: a migration is a record of what was applied.
_INVISIBLE_BEFORE = (
    r"\u0009-\u000d\u0020\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f"
    r"\u2000-\u200f\u2028\u2029\u202f\u205f-\u2065\u206a-\u206f\u3000\u3164\ufe00-\ufe0f"
    r"\ufeff\uffa0\ufff0-\ufff8"
)
_INVISIBLE = (
    r"\u0009-\u000d\u0020\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f"
    r"\u2000-\u200f\u2028\u2029\u202f\u205f-\u2065\u206a-\u206f\u2800\u3000\u3164\ufe00-\ufe0f"
    r"\ufeff\uffa0\ufff0-\ufff8"
)
_CHECK = "ck_tasks_title_visible"


def _visible_rule(invisible: str) -> None:
    op.drop_constraint(_CHECK, "tasks", type_="check")
    op.create_check_constraint(_CHECK, "tasks", f"title ~ '[^{invisible}]'")


def upgrade() -> None:
    # Every user's rows: row-level security is lifted for this transaction (as in 0003), so an
    # owner that is not a superuser repairs them all rather than none.
    op.execute("ALTER TABLE tasks NO FORCE ROW LEVEL SECURITY")
    op.execute(f"UPDATE tasks SET title = '(untitled)' WHERE title !~ '[^{_INVISIBLE}]'")
    _visible_rule(_INVISIBLE)
    op.execute("ALTER TABLE tasks FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    _visible_rule(_INVISIBLE_BEFORE)
