"""Every statement the task routes run, built once with SQLAlchemy Core and compiled to SQL.

Ownership is part of every statement: the one way to address a task is by its id *and* its
owner (`_owned`), so another user's task is exactly a missing one. Row-level security says it
again in the database (migration 0002).
"""

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
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
from sqlalchemy.dialects.postgresql import insert

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
        self.get = compiled(select(tasks_table).where(owned))
        self.toggle = compiled(
            update(tasks_table)
            .where(owned)
            .values(completed=not_(tasks.completed), updated_at=_BUMPED_UPDATED_AT)
            .returning(tasks.completed)
        )
        self.delete = compiled(delete(tasks_table).where(owned).returning(tasks.id))
        self.create = compiled(_create())
        self._lists = {
            (filtered, after): compiled(_listing(mine, filtered=filtered, after=after))
            for filtered in (False, True)
            for after in (False, True)
        }
        self._updates = {
            fields: compiled(
                update(tasks_table)
                .where(owned)
                .values(
                    **{field: bindparam(f"new_{field}") for field in fields},
                    updated_at=_BUMPED_UPDATED_AT,
                )
                .returning(*tasks_table.c)
            )
            for fields in (
                frozenset({"title"}),
                frozenset({"completed"}),
                frozenset(UPDATABLE),
            )
        }

    def list(self, *, filtered: bool, after: bool) -> str:
        return self._lists[filtered, after]

    def update(self, fields: frozenset[str]) -> str:
        return self._updates[fields]


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
