"""How a task's fields are written, whatever the database hands the service."""

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from service.tasks.schemas import rfc3339
from tests.integration.test_lifecycle import RFC3339_UTC


@pytest.mark.parametrize(
    ("moment", "written"),
    [
        # The zones psycopg hands timestamps in when the server's TimeZone is UTC.
        (datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC), "2026-11-26T10:00:00.123456Z"),
        (
            datetime(2026, 11, 26, 10, 0, 0, 5, tzinfo=ZoneInfo("Etc/UTC")),
            "2026-11-26T10:00:00.000005Z",
        ),
        (datetime(2026, 1, 15, 9, 0, 0, 1, tzinfo=ZoneInfo("GMT")), "2026-01-15T09:00:00.000001Z"),
        # Any other zone is converted, not mislabelled: London is GMT only in winter.
        (
            datetime(2026, 7, 1, 13, 0, 0, 500000, tzinfo=ZoneInfo("Europe/London")),
            "2026-07-01T12:00:00.500000Z",
        ),
        (
            datetime(2026, 11, 26, 15, 30, 0, 0, tzinfo=ZoneInfo("Asia/Kolkata")),
            "2026-11-26T10:00:00.000000Z",
        ),
        (
            datetime(2026, 1, 1, 0, 59, 59, 999999, tzinfo=timezone(timedelta(hours=1))),
            "2025-12-31T23:59:59.999999Z",
        ),
        (datetime(987, 6, 5, 4, 3, 2, 1, tzinfo=UTC), "0987-06-05T04:03:02.000001Z"),
    ],
)
def test_timestamps_are_written_in_utc_with_six_fraction_digits(
    moment: datetime, written: str
) -> None:
    # Fixed width, so that the strings sort as the moments do, whatever the session's zone.
    assert rfc3339(moment) == written
    assert RFC3339_UTC.match(written)
