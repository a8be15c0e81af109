"""What the service sends to PostgreSQL, recorded at the driver: every statement its psycopg 3
connections execute, with its parameters and whether it went out in a pipeline."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import pq

from service.data.access import SET_ROW_OWNER


@dataclass(frozen=True)
class Sent:
    statement: str
    parameters: Any
    pipelined: bool

    @property
    def sets_the_row_owner(self) -> bool:
        return self.statement == SET_ROW_OWNER


@contextmanager
def recorded_statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Sent]]:
    """Within the block, every statement an async psycopg cursor in this process runs (the
    connection's own `execute` runs on a cursor too). The tests' own database access is
    synchronous, so none of it is recorded."""
    sent: list[Sent] = []
    execute = psycopg.AsyncCursor.execute

    async def recording(
        self: psycopg.AsyncCursor[Any], query: Any, params: Any = None, **kwargs: Any
    ) -> Any:
        pipelined = self.connection.pgconn.pipeline_status != pq.PipelineStatus.OFF
        sent.append(Sent(str(query), params, pipelined))
        return await execute(self, query, params, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(psycopg.AsyncCursor, "execute", recording)
        yield sent
