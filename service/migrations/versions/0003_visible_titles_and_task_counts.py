"""visible NFC titles; each user's task count, kept by the database, for the per-user limit

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

`users.task_count` is maintained by triggers on `tasks`, so it is right whoever writes: the
service, a migration, or an operator deleting rows by hand. The service's create statement
locks the user's row and inserts only while the count is below TASKS_PER_USER_MAX, so
concurrent creates cannot overshoot (service/routes/tasks.py).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, not imported: a migration is a record of what was applied.
_WHITESPACE = (
    r"E'\u0009\u000a\u000b\u000c\u000d\u0020\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    r"\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff'"
)
_INVISIBLE = (
    r"\u0009-\u000d\u0020\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f"
    r"\u2000-\u200f\u2028\u2029\u202f\u205f-\u2065\u206a-\u206f\u3000\u3164\ufe00-\ufe0f"
    r"\ufeff\uffa0\ufff0-\ufff8"
)
_CHECKS = {
    "ck_tasks_title_visible": f"title ~ '[^{_INVISIBLE}]'",
    # Needs a UTF8 database, which PostgreSQL's installers and Neon create by default.
    "ck_tasks_title_nfc": "title IS NFC NORMALIZED",
}
_COUNT_FUNCTION = """
CREATE FUNCTION tasks_api_count_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE users SET task_count = task_count - 1 WHERE id = OLD.user_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE users SET task_count = task_count + 1 WHERE id = NEW.user_id;
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    # The data below belongs to every user. Row-level security binds the tables' owner only
    # while FORCEd (migration 0002): lifted for this transaction, so an owner that is not a
    # superuser (Neon's) repairs and counts every row rather than none.
    for table in ("users", "tasks"):
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
    # Titles stored before these rules: normalised (and cut back to 500 characters where NFC
    # lengthened one), and a title with nothing visible is named so.
    op.execute(
        f"UPDATE tasks SET title = btrim(left(normalize(title, NFC), 500), {_WHITESPACE}) "
        "WHERE title IS NOT NFC NORMALIZED"
    )
    op.execute(f"UPDATE tasks SET title = '(untitled)' WHERE title !~ '[^{_INVISIBLE}]'")
    for name, condition in _CHECKS.items():
        op.create_check_constraint(name, "tasks", condition)

    op.execute("ALTER TABLE users ADD COLUMN task_count integer NOT NULL DEFAULT 0")
    op.execute(
        "UPDATE users SET task_count = counted.n FROM "
        "(SELECT user_id, count(*) AS n FROM tasks GROUP BY user_id) AS counted "
        "WHERE users.id = counted.user_id"
    )
    op.create_check_constraint("ck_users_task_count", "users", "task_count >= 0")
    op.execute(_COUNT_FUNCTION)
    op.execute(
        "CREATE TRIGGER tasks_counted AFTER INSERT OR DELETE OR UPDATE OF user_id ON tasks "
        "FOR EACH ROW EXECUTE FUNCTION tasks_api_count_tasks()"
    )
    for table in ("users", "tasks"):
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    op.execute("DROP TRIGGER tasks_counted ON tasks")
    op.execute("DROP FUNCTION tasks_api_count_tasks()")
    op.drop_constraint("ck_users_task_count", "users", type_="check")
    op.execute("ALTER TABLE users DROP COLUMN task_count")
    for name in _CHECKS:
        op.drop_constraint(name, "tasks", type_="check")
