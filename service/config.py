"""All settings, read once from the environment (or passed in whole by tests)."""

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_BYTES = 32
MAX_LEEWAY_SECONDS = 30


class ConfigError(Exception):
    """A setting makes it unsafe or impossible to start; the message says which and why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL. Unset: an embedded PostgreSQL in TASKS_API_DATA_DIR.",
    )
    data_dir: Path = Field(
        default=Path(".tasks-api"),
        validation_alias=AliasChoices("TASKS_API_DATA_DIR", "data_dir"),
        description="Where the embedded database and its generated secret live.",
    )
    jwt_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("JWT_SECRET", "BETTER_AUTH_SECRET", "jwt_secret"),
        description="HS256 key, at least 32 bytes.",
    )
    jwt_issuer: str | None = Field(default=None, description="Required `iss`, when set.")
    jwt_audience: str | None = Field(default=None, description="Required `aud`, when set.")
    jwt_leeway_seconds: int = Field(default=5, ge=0, le=MAX_LEEWAY_SECONDS)

    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=5, ge=0)
    db_pool_timeout_seconds: float = Field(default=2.0, gt=0)
    db_connect_timeout_seconds: int = Field(default=2, ge=1)
    # Sent as a startup option; 0 sends none (for poolers that reject startup options).
    db_statement_timeout_ms: int = Field(default=4000, ge=0)

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    def secret_bytes(self) -> bytes:
        """The HS256 key, refusing to run without a strong one."""
        if self.jwt_secret is None:
            raise ConfigError(
                "JWT_SECRET is not set. Set JWT_SECRET (or BETTER_AUTH_SECRET) to a random "
                f"value of at least {MIN_SECRET_BYTES} bytes, e.g. `openssl rand -hex 32`."
            )
        secret = self.jwt_secret.get_secret_value().encode()
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"JWT_SECRET is {len(secret)} bytes; at least {MIN_SECRET_BYTES} are required "
                "so that tokens cannot be forged by guessing it."
            )
        return secret

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise ConfigError("DATABASE_URL is not set and no embedded database was started.")
        return self.database_url


@lru_cache
def get_settings() -> Settings:
    return Settings()
