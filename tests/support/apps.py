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
        # Off: a suite sends one user's requests, and 401s, faster than any real client.
        # tests/security/test_rate_limits.py and tests/integration/test_rate_limits*.py turn
        # them on.
        "rate_limit_user_requests": 0,
        "rate_limit_address_requests": 0,
        **overrides,
    }
    return Settings(**values)
