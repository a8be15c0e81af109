"""The service's logs: one JSON object per line, on stderr."""

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

# One line per request, written by the envelope (and by the server for requests it refuses).
access_log = logging.getLogger("tasks_api.access")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        trace_id = getattr(record, "trace_id", None)
        if trace_id is not None:  # written inside a traced request (service.tracing.TraceIds)
            entry["trace_id"] = trace_id
            entry["span_id"] = getattr(record, "span_id", None)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # orjson: this runs once per request, and the standard json module is several times slower.
        return orjson.dumps(entry, default=str).decode()


def logging_config(level: str) -> dict[str, Any]:
    """uvicorn's log config with the service's own loggers writing JSON lines to stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "service": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "tasks_api": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            # The pool's own word on connections it could not open or had to discard; its
            # INFO lines (one per checkout) never, whatever the level.
            "psycopg": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        },
    }
