"""All settings, read once from the environment and `.env` (or passed in whole by tests).

Precedence, highest first: arguments (tests), environment variables, a `.env` file in the
working directory, the defaults below. `.env.example` lists every setting with its default.
"""

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy import make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MIN_SECRET_BYTES = 32
MAX_LEEWAY_SECONDS = 30


class ConfigError(Exception):
    """A setting makes it unsafe or impossible to start; the message says which and why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, env_file=".env", env_file_encoding="utf-8"
    )

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL. Unset: an embedded PostgreSQL in TASKS_API_DATA_DIR.",
    )
    migration_database_url: str | None = Field(
        default=None,
        description="Where migrations (and their advisory lock) run; defaults to DATABASE_URL.",
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
    jwt_jwks_url: str | None = Field(
        default=None, description="JWKS of an asymmetric issuer (EdDSA, ES256, RS256, PS256)."
    )
    jwks_cache_seconds: float = Field(default=300, gt=0)
    # An unknown `kid` refetches the JWKS at most this often, so a flood of random kids
    # cannot become a flood of fetches.
    jwks_min_refresh_seconds: float = Field(default=10, ge=0)
    # The whole fetch (connect, headers, body), not each read: a JWKS endpoint that trickles
    # its answer holds waiting requests for this long at most.
    jwks_fetch_timeout_seconds: float = Field(default=3, gt=0)
    cursor_secret: SecretStr | None = Field(
        default=None,
        description="Key for pagination cursors; defaults to one derived from JWT_SECRET.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated origins allowed to call the API."
    )

    # The HTTP server's own bounds (service/server.py). A complete request must arrive within
    # HTTP_RECEIVE_TIMEOUT_SECONDS of its first byte; its request line and headers must fit
    # in HTTP_MAX_HEADER_BYTES (an 8 KiB token and ordinary headers fit with room to spare);
    # each worker holds at most HTTP_MAX_CONNECTIONS connections.
    http_receive_timeout_seconds: float = Field(default=10, gt=0)
    http_max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    http_max_connections: int = Field(default=1024, ge=1)

    # Off unless set: then GET /metrics answers Prometheus text to `Bearer <METRICS_TOKEN>`
    # (at least 32 bytes), and to nobody else.
    metrics_token: SecretStr | None = None

    # OWASP API4: one token cannot fill the database. Checked atomically by the create
    # statement itself; a create beyond it is a 409 (the contract's TaskLimitReached).
    tasks_per_user_max: int = Field(default=10_000, ge=1)

    # Rate limits (service.http.rate_limits), each policy off at 0: requests per verified user,
    # and requests without a valid token (every 401) per client address.
    rate_limit_user_requests: int = Field(default=600, ge=0)
    rate_limit_user_window_seconds: int = Field(default=60, ge=1)
    rate_limit_address_requests: int = Field(default=60, ge=0)
    rate_limit_address_window_seconds: int = Field(default=60, ge=1)
    # memory:// (each process counts alone) or redis://host:6379/0 (shared by every instance).
    rate_limit_storage_url: str = "memory://"
    # Each call to the storage, at most; past it the request is let through.
    rate_limit_storage_timeout_ms: int = Field(default=50, ge=1)
    # Redis keys start with it, so that several services can share one Redis.
    rate_limit_key_prefix: str = Field(default="tasks-api", min_length=1)
    # Proxies whose X-Forwarded-For / Forwarded name the client: addresses or CIDRs,
    # comma-separated. Unset: those fields are ignored and the socket's peer is the client.
    trusted_proxies: Annotated[list[IPNetwork], NoDecode] = Field(default_factory=list)

    # Safe retries and no lost updates (RFC 9110 preconditions, the Idempotency-Key draft).
    # With REQUIRE_IF_MATCH, PUT, PATCH, DELETE and the toggle without If-Match are a 428.
    require_if_match: bool = False
    # How long a stored outcome answers a retry with the same Idempotency-Key.
    idempotency_key_ttl_seconds: float = Field(default=86_400, ge=1)

    # Connections beyond the pool would be opened and closed per request under load; a
    # request that finds the pool busy waits up to DB_POOL_TIMEOUT_SECONDS, then gets a 503.
    db_pool_size: int = Field(default=16, ge=1)
    db_max_overflow: int = Field(default=0, ge=0)
    # Ping a pooled connection before use when it sat idle this long; 0 pings every time.
    db_ping_idle_seconds: float = Field(default=10, ge=0)
    db_pool_timeout_seconds: float = Field(default=2.0, gt=0)
    db_connect_timeout_seconds: int = Field(default=2, ge=1)
    # At start, `serve` and `migrate` wait this long for a database that refuses or does not
    # answer yet (a Neon compute waking from scale-to-zero, a container still starting).
    db_startup_wait_seconds: float = Field(default=30, ge=0)
    # Applying migrations (waiting for another process's migration lock included) must finish
    # within this, or start-up stops and says so instead of hanging.
    db_migration_timeout_seconds: float = Field(default=300, gt=0)
    # A client-side deadline per statement: when it passes, the statement is cancelled on the
    # server and its connection discarded. Never a startup option or a session SET, which a
    # transaction-mode pooler refuses or leaks to other clients. 0: only the request budget.
    db_statement_timeout_ms: int = Field(default=3000, ge=0)
    # All database work of one request, counted from the request's arrival (so time queued
    # for a connection counts), or the request is answered 503.
    db_request_timeout_seconds: float = Field(default=4.0, gt=0)
    # psycopg 3 prepares a statement on the server after this many executions. Off by
    # default: PgBouncer before 1.21 (and Neon's pooler unless configured) in transaction mode
    # hands each transaction a different server connection, where the statement is unknown.
    db_prepare_threshold: int | None = Field(default=None, ge=0)
    # Serve even with a database role that row-level security does not bind (a superuser,
    # BYPASSRLS, Neon's neon_superuser): the database then no longer backs the owner filters.
    db_allow_rls_bypass: bool = False

    # Traces (service.tracing), by OpenTelemetry's own variables: on when an OTLP endpoint is
    # set (the SDK reads the rest: OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, OTEL_BSP_*, ...).
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_exporter_otlp_protocol: str | None = None
    otel_exporter_otlp_traces_protocol: str | None = None
    otel_traces_exporter: str = "otlp"
    otel_sdk_disabled: bool = False
    # A caller's W3C traceparent continues the caller's trace. False at an untrusted edge:
    # every request starts a trace of its own (linked to the caller's, which it names).
    tracing_trust_traceparent: bool = True

    @field_validator("rate_limit_storage_url")
    @classmethod
    def _storage_scheme(cls, value: str) -> str:
        schemes = ("memory://", "redis://", "rediss://")  # Valkey speaks redis:// too
        if not value.startswith(schemes):
            raise ValueError(f"must start with one of {', '.join(schemes)}")
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    def hs256_key(self) -> bytes | None:
        """The HS256 key, or None when only a JWKS verifies tokens. Never a weak one."""
        if self.jwt_secret is None:
            if self.jwt_jwks_url is not None:
                return None
            raise ConfigError(
                "JWT_SECRET is not set. Set JWT_SECRET (or BETTER_AUTH_SECRET) to a random "
                f"value of at least {MIN_SECRET_BYTES} bytes, e.g. `openssl rand -hex 32`, "
                "or JWT_JWKS_URL for an issuer that signs with asymmetric keys."
            )
        return _strong(_secret_variable(), self.jwt_secret)

    def cursor_key(self) -> bytes:
        if self.cursor_secret is not None:
            return _strong("CURSOR_SECRET", self.cursor_secret)
        key = self.hs256_key()
        if key is None:
            raise ConfigError(
                "CURSOR_SECRET is not set. With JWT_JWKS_URL and no JWT_SECRET, set "
                f"CURSOR_SECRET to a random value of at least {MIN_SECRET_BYTES} bytes; it "
                "keeps pagination cursors opaque and bound to their user."
            )
        return key

    def jwks_url(self) -> str | None:
        """JWT_JWKS_URL, refused unless the tokens it verifies are pinned to this service.

        A JWKS usually belongs to an identity provider that issues tokens for many
        applications; without an audience, a token issued for any of them would be accepted
        here (RFC 8725 section 3.9). Plain http is refused except on loopback: anyone on
        the path could otherwise publish their own keys.
        """
        url = self.jwt_jwks_url
        if url is None:
            return None
        missing = [
            name
            for name, value in (
                ("JWT_AUDIENCE", self.jwt_audience),
                ("JWT_ISSUER", self.jwt_issuer),
            )
            if value is None
        ]
        if missing:
            raise ConfigError(
                f"JWT_JWKS_URL is set but {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not: set them to the `aud` and `iss` "
                "your identity provider puts in tokens for this service, so that tokens it "
                "issues for other applications are refused"
            )
        try:
            parsed = urlsplit(url)
            host = parsed.hostname
        except ValueError:  # an unclosed IPv6 bracket, a port that is not a number
            host = None
        if host is None or parsed.scheme not in ("https", "http"):
            raise ConfigError(f"JWT_JWKS_URL is not an http(s) URL: {url!r}")
        if parsed.scheme == "http" and not _is_loopback(host):
            raise ConfigError(
                f"JWT_JWKS_URL must use https (plain http is allowed on loopback only): {url}"
            )
        return url

    def traces_endpoint(self) -> str | None:
        """Where spans are sent (OTLP over HTTP), or None: tracing is off."""
        if self.otel_sdk_disabled or self.otel_traces_exporter.strip().lower() == "none":
            return None
        if self.otel_exporter_otlp_traces_endpoint:  # the signal's own URL, used as it is
            return self.otel_exporter_otlp_traces_endpoint
        if self.otel_exporter_otlp_endpoint:  # the base URL, to which the signal's path is added
            return self.otel_exporter_otlp_endpoint.removesuffix("/") + "/v1/traces"
        return None

    def metrics_key(self) -> bytes | None:
        return None if self.metrics_token is None else _strong("METRICS_TOKEN", self.metrics_token)

    def check(self) -> None:
        """Raise ConfigError for anything that makes the service unsafe to start."""
        self.hs256_key()
        self.cursor_key()
        self.jwks_url()
        self.metrics_key()
        protocol = self.otel_exporter_otlp_traces_protocol or self.otel_exporter_otlp_protocol
        if self.traces_endpoint() is not None and protocol not in (None, "http/protobuf"):
            raise ConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: traces are exported "
                "as OTLP over HTTP/protobuf (http/protobuf, the default)"
            )
        if self.otel_traces_exporter.strip().lower() not in ("otlp", "none"):
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER={self.otel_traces_exporter} is not supported: "
                "otlp (the default) or none"
            )

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise ConfigError("DATABASE_URL is not set and no embedded database was started.")
        return self.database_url

    def request_conninfo(self) -> str:
        """DATABASE_URL as the libpq URL psycopg 3's pool connects with (the request path)."""
        url = driver_url(self.require_database_url(), "psycopg", "DATABASE_URL")
        return url.set(drivername="postgresql").render_as_string(hide_password=False)

    def migration_url(self) -> URL:
        """Where migrations run (psycopg2): MIGRATION_DATABASE_URL, else DATABASE_URL.

        On Neon that is the direct endpoint, which Neon recommends for schema changes, as the
        table owner, while DATABASE_URL is the pooled endpoint as a least-privilege role.
        """
        if self.migration_database_url is not None:
            return driver_url(self.migration_database_url, "psycopg2", "MIGRATION_DATABASE_URL")
        return driver_url(self.require_database_url(), "psycopg2", "DATABASE_URL")

    def service_role_to_grant(self) -> str | None:
        """DATABASE_URL's role, when migrations run as another: migrations give it exactly
        what the request path needs (SELECT, INSERT, UPDATE, DELETE on every table of
        service.schema)."""
        if self.migration_database_url is None or self.database_url is None:
            return None
        service, owner = _user_of(self.database_url), _user_of(self.migration_database_url)
        return service if service is not None and service != owner else None


# Users write one `postgresql://` URL; each part of the service picks its own driver here:
# psycopg 3 (async) for requests, psycopg2 for migrations, the command line and fixtures.
_POSTGRES_SCHEMES = frozenset(
    {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"}
)


def _user_of(raw: str) -> str | None:
    try:
        return make_url(raw).username
    except ArgumentError:
        return None


def driver_url(raw: str, driver: Literal["psycopg", "psycopg2"], setting: str) -> URL:
    """`raw` with the driver this part of the service uses; ConfigError names `setting`."""
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(
            f"{setting} is not a database URL; expected postgresql://user:password@host:5432/db"
        ) from None
    if url.drivername not in _POSTGRES_SCHEMES:
        raise ConfigError(
            f"{setting} uses {url.drivername}://, but this service runs on PostgreSQL only; "
            "use a postgresql:// URL"
        )
    return url.set(drivername=f"postgresql+{driver}")


def _secret_variable() -> str:
    """Which variable the HS256 secret came from, so an error names the one the user set."""
    if "JWT_SECRET" not in os.environ and "BETTER_AUTH_SECRET" in os.environ:
        return "BETTER_AUTH_SECRET"
    return "JWT_SECRET"


def variable_of(field: str) -> str:
    """The environment variable that sets a field (its first alias, or its name)."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return field.upper()


def load_settings() -> Settings:
    """Settings from the environment and `.env`; ConfigError with one line per bad variable."""
    try:
        return Settings()
    except ValidationError as error:
        lines = []
        for problem in error.errors(include_url=False):
            field = str(problem["loc"][0]) if problem["loc"] else ""
            name = variable_of(field) if field in Settings.model_fields else field.upper()
            shown = "" if "secret" in field else f"={problem.get('input')!s:.60}"
            lines.append(f"{name}{shown}: {problem['msg'].removeprefix('Value error, ')}")
        raise ConfigError("\n".join(lines)) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _strong(name: str, secret: SecretStr) -> bytes:
    value = secret.get_secret_value().encode()
    if len(value) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{name} is {len(value)} bytes; at least {MIN_SECRET_BYTES} are required "
            "so that it cannot be guessed."
        )
    return value


@lru_cache
def get_settings() -> Settings:
    return load_settings()
