"""Settings for an app under test: the test database, the tests' secret, nothing else."""

from typing import Any

from service.config import Settings
from tests.support.tokens import SECRET


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "jwt_secret": SECRET,
        "jwt_issuer": None,
        "jwt_audience": None,
        **overrides,
    }
    return Settings(**values)
