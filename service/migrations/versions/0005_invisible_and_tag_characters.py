"""titles: every Default_Ignorable character counts as invisible; tag characters are refused

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

Characters beyond the Basic Multilingual Plane that render nothing counted as visible: the tag
block (U+E0000-U+E007F, which also carries hidden text), U+1BCA0-U+1BCA3, U+1D173-U+1D17A and
the rest of U+E0000-U+E0FFF. Tag characters are now refused anywhere in a title, and a title
needs a character visible by the full Default_Ignorable_Code_Point definition. Stored titles
are brought to the rule: tag characters are removed, and a title left with nothing visible is
named "(untitled)".
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, not imported: a migration is a record of what was applied.
_WHITESPACE = (
    r"E'\u0009\u000a\u000b\u000c\u000d\u0020\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    r"\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff'"
)
_TAGS = r"\U000e0000-\U000e007f"
_REFUSED_BEFORE = r"\u0001-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069\ufdd0-\ufdef\ufffe\uffff"
_REFUSED = _REFUSED_BEFORE + _TAGS
_INVISIBLE_BEFORE = (
    r"\u0009-\u000d\u0020\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f"
    r"\u2000-\u200f\u2028\u2029\u202f\u205f-\u2065\u206a-\u206f\u2800\u3000\u3164\ufe00-\ufe0f"
    r"\ufeff\uffa0\ufff0-\ufff8"
)
_INVISIBLE = _INVISIBLE_BEFORE + r"\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0080-\U000e0fff"


def _rules(refused: str, invisible: str) -> None:
    for name in ("ck_tasks_title_characters", "ck_tasks_title_visible"):
        op.drop_constraint(name, "tasks", type_="check")
    op.create_check_constraint("ck_tasks_title_characters", "tasks", f"title !~ '[{refused}]'")
    op.create_check_constraint("ck_tasks_title_visible", "tasks", f"title ~ '[^{invisible}]'")


def upgrade() -> None:
    # Every user's rows: row-level security is lifted for this transaction (as in 0003).
    op.execute("ALTER TABLE tasks NO FORCE ROW LEVEL SECURITY")
    # One statement: each row goes straight to a title every constraint (old and new) admits.
    cleaned = f"btrim(normalize(regexp_replace(title, '[{_TAGS}]', '', 'g'), NFC), {_WHITESPACE})"
    op.execute(
        f"UPDATE tasks SET title = CASE WHEN c.cleaned ~ '[^{_INVISIBLE}]' THEN c.cleaned "
        f"ELSE '(untitled)' END FROM (SELECT id, {cleaned} AS cleaned FROM tasks) AS c "
        f"WHERE tasks.id = c.id AND (tasks.title ~ '[{_TAGS}]' "
        f"OR tasks.title !~ '[^{_INVISIBLE}]')"
    )
    _rules(_REFUSED, _INVISIBLE)
    op.execute("ALTER TABLE tasks FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    _rules(_REFUSED_BEFORE, _INVISIBLE_BEFORE)
