"""Every statement the task routes run, built once with SQLAlchemy Core and compiled to SQL.

Ownership is part of every statement: the one way to address a task is by its id *and* its
owner (`owned`), so another user's task is exactly a missing one. Row-level security says it
again in the database (migration 0002).

A conditional write (If-Match) is one statement too: the write applies only to a row whose
version (`updated_at`, what its ETag names) is among those the client sent, and the same
statement says whether the task exists at all, so that a mismatch is a 412 and a missing task
a 404 without a read before the write. Two writers with one ETag: PostgreSQL re-checks the
version on the row the first one left, so the second writes nothing.
"""

from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    DateTime,
    Integer,
    Select,
    any_,
    bindparam,
    delete,
    func,
    literal_column,
    not_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.sql.dml import ReturningDelete, ReturningUpdate

from service.data.idempotency import idempotent
from service.data.sql import compiled
from service.tasks.table import tasks_table, users_table

tasks = tasks_table.c

# Strictly increasing even for two changes within one clock tick.
_BUMPED_UPDATED_AT: ColumnElement[Any] = literal_column(
    "greatest(clock_timestamp(), tasks.updated_at + interval '1 microsecond')"
)
UPDATABLE = ("title", "completed")


class Statements:
    """The statements as SQL text with `%(name)s` parameters: compiling a SQLAlchemy statement
    costs more than the round trip it makes, so it happens once, here.

    Bound parameters are named apart from the columns, whose names SQLAlchemy reserves for
    VALUES and SET. `owner_filter=False` is a test-only hook: it drops `user_id = :owner`
    from every WHERE clause, to show that row-level security alone still keeps users apart
    (tests/security/test_second_wall.py). The service never builds it.
    """

    def __init__(self, *, owner_filter: bool = True) -> None:
        mine: ColumnElement[bool] = tasks.user_id == bindparam("owner") if owner_filter else true()
        owned = (tasks.id == bindparam("task_id")) & mine
        # The versions an If-Match names, compared strongly (equal timestamps).
        versions = bindparam("versions", type_=ARRAY(DateTime(timezone=True)))
        matching = owned & (tasks.updated_at == any_(versions))

        def toggle(where: ColumnElement[bool]) -> ReturningUpdate[Any]:
            return (
                update(tasks_table)
                .where(where)
                .values(completed=not_(tasks.completed), updated_at=_BUMPED_UPDATED_AT)
                .returning(tasks.completed, tasks.updated_at)
            )

        def remove(where: ColumnElement[bool]) -> ReturningDelete[Any]:
            return delete(tasks_table).where(where).returning(tasks.id)

        def change(where: ColumnElement[bool], fields: frozenset[str]) -> ReturningUpdate[Any]:
            return (
                update(tasks_table)
                .where(where)
                .values(
                    **{field: bindparam(f"new_{field}") for field in fields},
                    updated_at=_BUMPED_UPDATED_AT,
                )
                .returning(*tasks_table.c)
            )

        self.get = compiled(select(tasks_table).where(owned))
        self.toggle = compiled(toggle(owned))
        self.toggle_if = compiled(_conditional(toggle(matching).cte("changed"), owned))
        self.delete = compiled(remove(owned))
        self.delete_if = compiled(_conditional(remove(matching).cte("changed"), owned))
        self.create = compiled(_create())
        # The two writes that are not idempotent by nature, with an Idempotency-Key: the
        # write claims the key in its own statement (service.data.idempotency).
        self.create_once = idempotent(_create())
        self.toggle_once = idempotent(toggle(owned))
        self.toggle_if_once = idempotent(toggle(matching), lambda w: _conditional(w, owned))
        self._lists = {
            (filtered, after): compiled(_listing(mine, filtered=filtered, after=after))
            for filtered in (False, True)
            for after in (False, True)
        }
        field_sets = (frozenset({"title"}), frozenset({"completed"}), frozenset(UPDATABLE))
        self._updates = {fields: compiled(change(owned, fields)) for fields in field_sets}
        self._updates_if = {
            fields: compiled(_conditional(change(matching, fields).cte("changed"), owned))
            for fields in field_sets
        }

    def list(self, *, filtered: bool, after: bool) -> str:
        return self._lists[filtered, after]

    def update(self, fields: frozenset[str], *, conditional: bool = False) -> str:
        return (self._updates_if if conditional else self._updates)[fields]


def _conditional(changed: CTE, owned: Any) -> Select[Any]:
    """The write `changed` (already limited to the matching versions) with, first, how many
    tasks the request addresses: one row, `(found, *the write's RETURNING or NULLs)`. Both
    parts read one snapshot, so `found` is the task as it was when the statement began."""
    target = (
        select(func.count().label("found")).select_from(tasks_table).where(owned).subquery("target")
    )
    return select(target.c.found, *changed.c).select_from(target.outerjoin(changed, true()))


def _create() -> Any:
    """One statement, one round trip: lock the user's row (creating it with the first task, so
    tasks.user_id is a real foreign key without a lookup per request) and insert only while
    the user's task_count, kept by triggers on `tasks`, is below the limit. ON CONFLICT DO
    UPDATE waits for a concurrent create of the same user and then re-checks its WHERE
    against the committed count, so concurrent creates cannot overshoot; when the WHERE
    fails, `slot` is empty and nothing is inserted."""
    users = users_table.c
    slot = (
        insert(users_table)
        .values(id=bindparam("owner"))
        .on_conflict_do_update(
            index_elements=[users.id],
            set_={"task_count": users.task_count},
            where=users.task_count < bindparam("max_tasks", type_=Integer()),
        )
        .returning(users.id)
        .cte("slot")
    )
    now = func.statement_timestamp()  # one value for both: two defaults read two clocks
    return (
        insert(tasks_table)
        .from_select(
            ["id", "user_id", "title", "created_at", "updated_at"],
            select(
                bindparam("new_id", type_=tasks.id.type),
                slot.c.id,
                bindparam("new_title", type_=tasks.title.type),
                now,
                now,
            ),
        )
        .returning(*tasks_table.c)
    )


def _listing(mine: ColumnElement[bool], *, filtered: bool, after: bool) -> Any:
    """The user's tasks in (created_at, id) order, from a keyset position when `after`."""
    statement = select(tasks_table).where(mine)
    if filtered:
        statement = statement.where(tasks.completed == bindparam("completed"))
    if after:
        after_created_at = bindparam("after_created_at", type_=tasks.created_at.type)
        after_id = bindparam("after_id", type_=tasks.id.type)
        position = tuple_(tasks.created_at, tasks.id)
        statement = statement.where(position > tuple_(after_created_at, after_id))
    limit = bindparam("limit", type_=Integer())
    return statement.order_by(tasks.created_at, tasks.id).limit(limit)


statements = Statements()
