"""Rule: the service refuses to start without a strong secret, and never invents one
when it is pointed at a real database."""

import subprocess

import pytest
from pydantic import ValidationError

from service.config import ConfigError, Settings
from service.main import create_app
from tests.support.apps import make_settings
from tests.support.live import cli


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (None, "JWT_SECRET is not set"),
        ("x" * 31, "JWT_SECRET is 31 bytes; at least 32 are required"),
        ("é" * 15, "JWT_SECRET is 30 bytes"),  # bytes, not characters
    ],
    ids=["missing", "31 bytes", "15 two-byte characters"],
)
def test_app_refuses_a_missing_or_short_secret(
    database_url: str, secret: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        create_app(make_settings(database_url, jwt_secret=secret))


def test_cli_refuses_to_serve_with_a_database_url_and_no_secret(database_url: str) -> None:
    env = {"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [*cli("serve", "--no-migrate", "--port", "1")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "JWT_SECRET is not set" in result.stderr
    assert "listening" not in result.stdout


def test_better_auth_secret_is_accepted_as_an_alias(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("JWT_SECRET", raising=False)
    monkeypatch.setenv("BETTER_AUTH_SECRET", "b" * 32)
    secret = Settings().jwt_secret
    assert secret is not None
    assert secret.get_secret_value() == "b" * 32


def test_leeway_cannot_exceed_30_seconds() -> None:
    with pytest.raises(ValidationError):
        Settings(jwt_leeway_seconds=31)
