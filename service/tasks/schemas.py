"""The shapes of task data: what the API accepts, and the one Task it returns."""

import uuid
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime, tzinfo
from typing import Any, Self, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, StrictBool, field_validator, model_validator

from service.tasks.table import tasks_table
from service.tasks.titles import Title


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
