"""The two tables, and the shapes of task data the API accepts and returns."""

import re
import unicodedata
import uuid
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime, tzinfo
from typing import Annotated, Any, Self, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictStr,
    field_validator,
    model_validator,
)
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

TITLE_MAX_CHARS = 500
# Exactly the characters JavaScript's String.prototype.trim removes, so a frontend can apply
# the same rule; the contract's Title pattern spells out the same set.
TITLE_WHITESPACE = (
    "\t\n\x0b\x0c\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
# What a title may not contain once trimmed, as a regular-expression character class: C0 and
# C1 control characters and DEL (an escape sequence rewrites the terminal that shows a log
# line), the bidirectional embedding, override and isolate controls (they reorder how the
# text around them is displayed), and the noncharacters of the Basic Multilingual Plane. The
# contract's Title pattern and the CHECK constraint ck_tasks_title_characters spell out the
# same set.
TITLE_REFUSED = r"\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069\ufdd0-\ufdef\ufffe\uffff"
_REFUSED_IN_TITLE = re.compile(f"[{TITLE_REFUSED}]")
# Characters that show nothing by themselves: the whitespace above and the Default_Ignorable
# code points of the Basic Multilingual Plane that are not refused outright (soft hyphen,
# zero-width space and joiners, word joiner and invisible operators, fillers, variation
# selectors, ...), and U+2800 BRAILLE PATTERN BLANK, which is not Default_Ignorable but draws
# nothing (the other classic "blank name"). A title needs at least one character outside this
# set. Invisible
# characters beyond the BMP (tags, U+E0000-U+E0FFF) count as visible: the contract's pattern,
# which must say the same, cannot name them portably.
TITLE_INVISIBLE = (
    r"\u0009-\u000d\u0020\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f"
    r"\u2000-\u200f\u2028\u2029\u202f\u205f-\u2065\u206a-\u206f\u2800\u3000\u3164\ufe00-\ufe0f"
    r"\ufeff\uffa0\ufff0-\ufff8"
)
_VISIBLE_IN_TITLE = re.compile(f"[^{TITLE_INVISIBLE}]")


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


_LENGTH_RULE = f"must be 1 to {TITLE_MAX_CHARS} characters after trimming whitespace"


def clean_title(value: str) -> str:
    """The title as stored: trimmed and NFC-normalised, or ValueError saying which rule failed.

    NFC, so that one title has one spelling: "é" typed as one code point or as "e" and a
    combining accent is stored, compared and sorted alike.
    """
    title = value.strip(TITLE_WHITESPACE)
    if not 1 <= len(title) <= TITLE_MAX_CHARS:
        raise ValueError(_LENGTH_RULE)
    if _REFUSED_IN_TITLE.search(title):
        raise ValueError(
            "must not contain control characters, bidirectional controls or noncharacters"
        )
    if not _VISIBLE_IN_TITLE.search(title):
        raise ValueError("must contain at least one visible character")
    try:
        title.encode()
    except UnicodeEncodeError:
        # A JSON escape such as "\ud800" decodes to a lone surrogate, which is not text.
        raise ValueError("must be valid Unicode text") from None
    title = unicodedata.normalize("NFC", title)
    # A few characters lengthen under NFC (U+0958 becomes two code points, U+FB2C three).
    if len(title) > TITLE_MAX_CHARS:
        raise ValueError(_LENGTH_RULE + " and normalising to NFC")
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


def _utc_zones() -> frozenset[tzinfo]:
    zones: set[tzinfo] = {UTC}
    # Names of UTC and of zones that never leave offset zero (GMT has no summer time).
    for key in ("UTC", "Etc/UTC", "Etc/UCT", "Universal", "Zulu", "GMT", "Etc/GMT", "Etc/GMT0"):
        # Without a time zone database there are none to add (psycopg then falls back to UTC).
        with suppress(ZoneInfoNotFoundError):
            zones.add(ZoneInfo(key))
    return frozenset(zones)


# The zones psycopg hands timestamps in when the server's TimeZone is UTC or GMT (the usual
# defaults). ZoneInfo objects are cached per key, so these are the very objects it uses.
_UTC_ZONES = _utc_zones()
_RFC3339_UTC = "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ"


def rfc3339(moment: datetime) -> str:
    """`2026-11-26T10:00:00.123456Z`: UTC, always with six fraction digits, so that the
    strings sort as the moments do. This runs twice for every task returned: a timestamp
    already in a known UTC zone is formatted without asking its zone for an offset."""
    if moment.tzinfo not in _UTC_ZONES:
        moment = moment.astimezone(UTC)
    return _RFC3339_UTC % (
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
    )


class PublicTask(TypedDict):
    """The contract's Task: the one shape every endpoint returns. orjson writes the UUIDs in
    their canonical form, as the contract's `format: uuid` expects."""

    id: uuid.UUID
    user_id: uuid.UUID
    title: str
    completed: bool
    created_at: str
    updated_at: str


TASK_COLUMNS = ("id", "user_id", "title", "completed", "created_at", "updated_at")
# Every statement returns whole rows (`select(tasks_table)`, `returning(*tasks_table.c)`), so
# the table's column order is the order public_task reads.
if tuple(tasks_table.c.keys()) != TASK_COLUMNS:
    raise RuntimeError(f"tasks columns are {tasks_table.c.keys()}; update TASK_COLUMNS")


def public_task(row: Sequence[Any]) -> PublicTask:
    """A whole `tasks` row, columns in TASK_COLUMNS order, as the contract's Task.

    Unpacked by position: reading six attributes of a SQLAlchemy Row by name costs more than
    the rest of this function, which runs for every task of every page."""
    id_, user_id, title, completed, created_at, updated_at = row
    return {
        "id": id_,
        "user_id": user_id,
        "title": title,
        "completed": completed,
        "created_at": rfc3339(created_at),
        "updated_at": rfc3339(updated_at),
    }
