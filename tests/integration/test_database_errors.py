"""A database the service cannot use is a 503 for the client and, for the operator, one log
line with the cause in the server's or driver's own words: host and port, what was refused,
never the password."""

import logging

import httpx
import pytest
from sqlalchemy import make_url

from service.main import create_app
from tests.support.apps import make_settings
from tests.support.live import free_port, serving
from tests.support.pooler import pgbouncer

PASSWORD = "hunter2-secret"


def _readiness_and_log(url: str, caplog: pytest.LogCaptureFixture) -> str:
    """/readyz of a service on `url` (asserting 503) and what it logged at warning level."""
    caplog.set_level(logging.WARNING, logger="service")
    with serving(create_app(make_settings(url))) as base, httpx.Client(base_url=base) as api:
        response = api.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("service")]
    assert len(lines) == 1
    assert PASSWORD not in lines[0]
    assert "\n" not in lines[0]
    return lines[0]


def test_connection_refused_names_host_and_port(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    line = _readiness_and_log(f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/x", caplog)
    assert line.startswith("database unavailable: OperationalError: ")
    assert '"127.0.0.1"' in line
    assert f"port {port}" in line
    assert "Connection refused" in line


def test_a_wrong_password_says_so(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with pgbouncer(database_url, client_password="the-right-one") as pooled:
        wrong = make_url(pooled).set(password=PASSWORD).render_as_string(hide_password=False)
        line = _readiness_and_log(wrong, caplog)
    assert "password authentication failed" in line


def test_a_pooler_refusing_a_startup_option_says_which(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # What the service itself sent before it stopped sending startup options.
    with pgbouncer(database_url) as pooled:
        url = make_url(pooled).update_query_dict({"options": "-c statement_timeout=3000"})
        line = _readiness_and_log(url.render_as_string(hide_password=False), caplog)
    assert "unsupported startup parameter: options" in line
