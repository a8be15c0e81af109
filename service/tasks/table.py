"""The tables of the tasks resource: each user's tasks, and the users that own them.

`users` holds one row per user the service has seen write, created with the user's first task,
and the user's task count that the per-user limit reads (kept by triggers on `tasks`).
"""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    Table,
    false,
    func,
    text,
)
from sqlmodel import Field, Relationship, SQLModel

from service.tasks.titles import TITLE_INVISIBLE, TITLE_MAX_CHARS, TITLE_REFUSED, TITLE_WHITESPACE


def _timestamp_column() -> Any:
    # clock_timestamp(), not now(): now() is the transaction's start, shared by every row
    # a transaction writes.
    return Field(
        sa_column=Column(
            DateTime(timezone=True), nullable=False, server_default=func.clock_timestamp()
        )
    )


class User(SQLModel, table=True):
    """A user the service has seen write; its id comes from a verified token."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(text("task_count >= 0"), name="ck_users_task_count"),)

    id: uuid.UUID = Field(primary_key=True)
    created_at: datetime = _timestamp_column()
    # How many tasks the user has, kept by triggers on `tasks` (migration 0003); the create
    # statement reads it, under the row's lock, to enforce TASKS_PER_USER_MAX.
    task_count: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    # The database deletes a user's tasks with the user (ON DELETE CASCADE); the ORM leaves
    # it to the database instead of loading each task to delete it.
    tasks: list["Task"] = Relationship(
        back_populates="user", cascade_delete=True, passive_deletes=True
    )


# The database's own copy of the API's rules for a stored task (migration 0002). Names are
# stable: an error that names one tells which rule a write broke.
TASK_CHECKS = {
    "ck_tasks_title_length": f"char_length(title) BETWEEN 1 AND {TITLE_MAX_CHARS}",
    "ck_tasks_title_trimmed": "title = btrim(title, E'{}')".format(
        "".join(f"\\u{ord(character):04x}" for character in TITLE_WHITESPACE)
    ),
    # PostgreSQL text cannot hold NUL at all, and its regular expressions cannot name it.
    "ck_tasks_title_characters": "title !~ '[{}]'".format(
        TITLE_REFUSED.replace(r"\u0000", r"\u0001")
    ),
    "ck_tasks_title_visible": f"title ~ '[^{TITLE_INVISIBLE}]'",
    "ck_tasks_title_nfc": "title IS NFC NORMALIZED",
    "ck_tasks_updated_after_created": "updated_at >= created_at",
}


class Task(SQLModel, table=True):
    __tablename__ = "tasks"
    __table_args__ = (
        # Serves every listing: the user's tasks in (created_at, id) order, and keyset seeks.
        Index("ix_tasks_user_created_id", "user_id", "created_at", "id"),
        # The same for a listing filtered by completion state.
        Index("ix_tasks_user_completed_created_id", "user_id", "completed", "created_at", "id"),
        *(CheckConstraint(text(sql), name=name) for name, sql in TASK_CHECKS.items()),
    )

    id: uuid.UUID = Field(primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", ondelete="CASCADE", nullable=False)
    title: str = Field(max_length=TITLE_MAX_CHARS)
    completed: bool = Field(
        sa_column=Column(Boolean, nullable=False, server_default=false()),
    )
    created_at: datetime = _timestamp_column()
    updated_at: datetime = _timestamp_column()
    user: User | None = Relationship(back_populates="tasks")


# The tables themselves, for statements: the API reads and writes rows, never ORM objects.
tasks_table: Table = Task.__table__  # type: ignore[attr-defined]
users_table: Table = User.__table__  # type: ignore[attr-defined]
