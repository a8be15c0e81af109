"""the database as a second wall: CHECK constraints that mirror the API, row-level security

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

Row-level security is FORCEd, so it binds the tables' owner too; only superusers and roles
with BYPASSRLS pass it. A later data migration that must touch every user's rows runs as such
a role, or sets `tasks_api.user_id` for each user it touches.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, not imported: a migration is a record of what was applied.
_WHITESPACE = (
    r"E'\u0009\u000a\u000b\u000c\u000d\u0020\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    r"\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff'"
)
_REFUSED = r"'[\u0001-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069\ufdd0-\ufdef\ufffe\uffff]'"
_CHECKS = {
    "ck_tasks_title_length": "char_length(title) BETWEEN 1 AND 500",
    "ck_tasks_title_trimmed": f"title = btrim(title, {_WHITESPACE})",
    "ck_tasks_title_characters": f"title !~ {_REFUSED}",
    "ck_tasks_updated_after_created": "updated_at >= created_at",
}
# The request's user, set per transaction by the service; unset or empty matches no row. A
# scalar subquery, so PostgreSQL reads the setting once per statement (an InitPlan), not once
# per row it checks.
_CURRENT_USER = "(SELECT NULLIF(current_setting('tasks_api.user_id', true), '')::uuid)"


def upgrade() -> None:
    # Titles stored before the API refused these characters: each becomes a space, and a title
    # left with nothing visible is named so, so that the constraints below hold for every row.
    op.execute(
        f"UPDATE tasks SET title = btrim(regexp_replace(title, {_REFUSED}, ' ', 'g'), "
        f"{_WHITESPACE}) WHERE title ~ {_REFUSED} OR title <> btrim(title, {_WHITESPACE})"
    )
    op.execute("UPDATE tasks SET title = '(untitled)' WHERE title = ''")
    op.execute("UPDATE tasks SET updated_at = created_at WHERE updated_at < created_at")
    for name, condition in _CHECKS.items():
        op.create_check_constraint(name, "tasks", condition)

    for table, column in (("users", "id"), ("tasks", "user_id")):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        # USING filters what a statement sees; WITH CHECK refuses writing a row that would
        # belong to anyone else.
        op.execute(
            f"CREATE POLICY {table}_of_the_current_user ON {table} "
            f"USING ({column} = {_CURRENT_USER}) WITH CHECK ({column} = {_CURRENT_USER})"
        )


def downgrade() -> None:
    for table in ("tasks", "users"):
        op.execute(f"DROP POLICY {table}_of_the_current_user ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    for name in _CHECKS:
        op.drop_constraint(name, "tasks", type_="check")
