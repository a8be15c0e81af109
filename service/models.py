"""The two tables, and the shapes of task data the API accepts and returns."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Self, TypedDict

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictStr,
    field_validator,
    model_validator,
)
from sqlalchemy import Boolean, Column, DateTime, Index, Table, false, func
from sqlmodel import Field, SQLModel

TITLE_MAX_CHARS = 500
# Exactly the characters JavaScript's String.prototype.trim removes, so a frontend can apply
# the same rule; the contract's Title pattern spells out the same set.
TITLE_WHITESPACE = (
    "\t\n\x0b\x0c\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)


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

    id: uuid.UUID = Field(primary_key=True)
    created_at: datetime = _timestamp_column()


class Task(SQLModel, table=True):
    __tablename__ = "tasks"
    __table_args__ = (
        # Serves every listing: the user's tasks in (created_at, id) order, and keyset seeks.
        Index("ix_tasks_user_created_id", "user_id", "created_at", "id"),
        # The same for a listing filtered by completion state.
        Index("ix_tasks_user_completed_created_id", "user_id", "completed", "created_at", "id"),
    )

    id: uuid.UUID = Field(primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", ondelete="CASCADE", nullable=False)
    title: str = Field(max_length=TITLE_MAX_CHARS)
    completed: bool = Field(
        sa_column=Column(Boolean, nullable=False, server_default=false()),
    )
    created_at: datetime = _timestamp_column()
    updated_at: datetime = _timestamp_column()


# The tables themselves, for statements: the API reads and writes rows, never ORM objects.
tasks_table: Table = Task.__table__  # type: ignore[attr-defined]
users_table: Table = User.__table__  # type: ignore[attr-defined]


def clean_title(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    title = value.strip(TITLE_WHITESPACE)
    if not 1 <= len(title) <= TITLE_MAX_CHARS:
        raise ValueError(f"must be 1 to {TITLE_MAX_CHARS} characters after trimming whitespace")
    try:
        title.encode()
    except UnicodeEncodeError:
        # A JSON escape such as "\ud800" decodes to a lone surrogate, which is not text.
        raise ValueError("must be valid Unicode text") from None
    return title


Title = Annotated[StrictStr, AfterValidator(clean_title)]


class _Input(BaseModel):
    # Unknown fields are errors, so `id`, `user_id` or timestamps in a body can never be
    # mistaken for something the service honours.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TaskCreate(_Input):
    title: Title


class TaskReplace(_Input):
    title: Title
    completed: StrictBool


class TaskUpdate(_Input):
    title: Title | None = None
    completed: StrictBool | None = None

    @field_validator("title", "completed", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Optional means "may be left out", not "may be null".
        if value is None:
            raise ValueError("must not be null")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("must change at least one of title, completed")
        return self


def rfc3339(moment: datetime) -> str:
    """`2026-11-26T10:00:00.123456Z`: UTC, always with microseconds."""
    if moment.utcoffset() != _UTC_OFFSET:
        moment = moment.astimezone(UTC)
    # isoformat is several times faster than strftime, and this runs for every task returned.
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


_UTC_OFFSET = timedelta(0)


class PublicTask(TypedDict):
    """The contract's Task: the one shape every endpoint returns."""

    id: str
    user_id: str
    title: str
    completed: bool
    created_at: str
    updated_at: str


def public_task(row: Any) -> PublicTask:
    """A `tasks` row as the contract's Task."""
    return {
        "id": str(row.id),
        "user_id": str(row.user_id),
        "title": row.title,
        "completed": row.completed,
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
    }
