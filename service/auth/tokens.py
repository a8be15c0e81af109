"""Who is calling: a verified bearer JWT and nothing else.

The identity never comes from a path, query or body. Nothing here knows HTTP frameworks: the
edge (service.http.api) hands over the Authorization header's values and answers the
exceptions below as 401 (or 503 when an issuer's keys cannot be fetched).

Two verifiers may be configured: HS256 with a shared secret, and a JWKS for asymmetric
issuers. Each token goes to exactly one, chosen by its header, and each verifier accepts only
its own algorithms, so an HMAC token can never be checked against a public key.
"""

import base64
import binascii
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from opentelemetry.trace import Tracer

from service import strict_json
from service.auth.jwks import JwksCache
from service.config import ConfigError, Settings
from service.metrics import Metrics
from service.tracing import failed
from service.uuids import CANONICAL_UUID

# Non-UUID subjects map to uuid5(uuid5(USER_NAMESPACE, iss), sub); the README documents this
# so a client can compute its own user id.
USER_NAMESPACE = uuid.UUID("dcbfd48b-7501-46b4-8af1-4fb6abbd9bb6")
# Larger tokens are refused before any parsing or signature work.
MAX_TOKEN_CHARS = 8192
ASYMMETRIC_ALGORITHMS = frozenset({"EdDSA", "ES256", "RS256", "PS256"})
# Checking a signature is the largest CPU cost of a request, and a client sends the same token
# for every request until it expires. A verified token is remembered for this long at most
# (never past its `exp`), so a key dropped from the JWKS stops working within that time too.
VERIFIED_TOKEN_SECONDS = 30
# Bounded by count and by size: 10,000 tokens of the largest accepted size would be 80 MiB.
VERIFIED_TOKEN_ENTRIES = 10_000
VERIFIED_TOKEN_CHARS = 4 * 1024 * 1024
# The span of a verification, when tracing is on; a JWKS fetch it waits for is its child.
VERIFY_SPAN = "verify token"


class NoToken(Exception):
    """The request carries no bearer token: RFC 6750 says to name no error then."""


class InvalidToken(Exception):
    """A token was presented and is not acceptable; the message may be shown to the client."""

    def __init__(self, detail: str = "The token is invalid.") -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: uuid.UUID
    subject: str
    issuer: str


def user_id_for(issuer: str, subject: str) -> uuid.UUID:
    """A `sub` in canonical UUID form is the user id; any other maps to a stable UUIDv5."""
    if CANONICAL_UUID.fullmatch(subject):
        return uuid.UUID(subject)
    return uuid.uuid5(uuid.uuid5(USER_NAMESPACE, issuer), subject)


_JWS = jwt.PyJWS()
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
# NumericDate (RFC 7519 section 2) is a JSON number of seconds; anything outside 1970 to
# 9999 is not a date a token issuer means, and floats beyond it overflow date arithmetic.
_LAST_NUMERIC_DATE = 253_402_300_799  # 9999-12-31T23:59:59Z


def _segment_json(token: str, index: int) -> dict[str, Any]:
    """One base64url segment of a compact JWS, parsed as an I-JSON object."""
    segments = token.split(".")
    if len(segments) != 3 or not _BASE64URL.fullmatch(segments[index]):
        raise InvalidToken()
    try:
        raw = base64.urlsafe_b64decode(segments[index] + "=" * (-len(segments[index]) % 4))
        document = strict_json.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidToken() from None
    if not isinstance(document, dict):
        raise InvalidToken()
    return document


def _claims(payload: bytes) -> dict[str, Any]:
    """The verified payload, parsed as strictly as the header: a repeated claim is refused."""
    try:
        claims = strict_json.loads(payload)
    except ValueError:
        raise InvalidToken() from None
    if not isinstance(claims, dict):
        raise InvalidToken()
    return claims


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _is_text(value: object) -> bool:
    """A non-blank string of Unicode text without control characters: a JSON escape can
    smuggle in a lone surrogate, and no issuer names a user with a newline in it."""
    if not isinstance(value, str) or not value.strip() or _CONTROL.search(value):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _is_numeric_date(value: object) -> bool:
    # bool is an int in Python, and `true` is not a date.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 <= value <= _LAST_NUMERIC_DATE


def _claim(
    claims: dict[str, Any], name: str, valid: Callable[[object], bool], *, required: bool = False
) -> Any:
    """The claim's value, or None when it is absent and optional; a 401 when it is missing
    but required, or present but not `valid`."""
    if name not in claims:
        if required:
            raise InvalidToken()
        return None
    if not valid(claims[name]):
        raise InvalidToken()
    return claims[name]


class TokenVerifier:
    """Verifies the signature with PyJWT, then the claims itself.

    The header and the payload are parsed as I-JSON (`service.strict_json`): a repeated name
    in either is refused, so the service never reads a token differently from a gateway that
    keeps the first value. Claims are checked here rather than by PyJWT, which accepts `exp`
    as a string and fails with an exception on one beyond a float's range: every registered
    claim must have its RFC 7519 type and a sane value, or the token is a 401.
    """

    def __init__(
        self, settings: Settings, metrics: Metrics | None = None, tracer: Tracer | None = None
    ) -> None:
        self._hs256_key = settings.hs256_key()
        self._tracer = tracer
        jwks_url = settings.jwks_url()
        self._jwks = (
            JwksCache(
                jwks_url,
                ttl=settings.jwks_cache_seconds,
                min_refresh=settings.jwks_min_refresh_seconds,
                timeout=settings.jwks_fetch_timeout_seconds,
                on_fetch=(metrics or Metrics.off()).jwks_fetch,
                tracer=tracer,
            )
            if jwks_url
            else None
        )
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        # token -> (principal, monotonic deadline); only ever holds tokens that verified.
        self._verified: dict[str, tuple[Principal, float]] = {}
        self._verified_chars = 0

    async def verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidToken("The token is too large.")
        remembered = self._verified.get(token)
        if remembered is not None and time.monotonic() < remembered[1]:
            return remembered[0]
        if self._tracer is None:
            principal, expires_at = await self._verify(token)
        else:
            # A span for a verification (a signature checked, a JWKS fetch waited for), none
            # for a token remembered: that takes a microsecond. It says whether the token
            # verified; never the token, its claims, or why it failed.
            with self._tracer.start_as_current_span(
                VERIFY_SPAN, record_exception=False, set_status_on_exception=False
            ) as span:
                try:
                    principal, expires_at = await self._verify(token)
                except Exception as error:
                    failed(span, error)
                    raise
        lifetime = min(VERIFIED_TOKEN_SECONDS, expires_at + self._leeway - time.time())
        self._remember(token, principal, time.monotonic() + lifetime)
        return principal

    def _remember(self, token: str, principal: Principal, until: float) -> None:
        if token in self._verified:  # an expired entry being renewed
            self._verified_chars -= len(token)
            del self._verified[token]
        while self._verified and (
            len(self._verified) >= VERIFIED_TOKEN_ENTRIES
            or self._verified_chars + len(token) > VERIFIED_TOKEN_CHARS
        ):
            oldest = next(iter(self._verified))
            self._verified_chars -= len(oldest)
            del self._verified[oldest]
        self._verified[token] = (principal, until)
        self._verified_chars += len(token)

    @property
    def remembered(self) -> tuple[int, int]:
        """How many verified tokens are remembered, and their total size in characters."""
        return len(self._verified), self._verified_chars

    async def _verify(self, token: str) -> tuple[Principal, float]:
        header = _segment_json(token, 0)
        # No JWS extension is understood here, so a token that demands one is refused
        # (RFC 7515 section 4.1.11). `jku`, `x5u` and `jwk` are simply never looked at.
        if "crit" in header:
            raise InvalidToken()
        key, algorithm = await self._key_for(header)
        try:
            signed = _JWS.decode_complete(token, key, algorithms=[algorithm])
        except jwt.PyJWTError:
            raise InvalidToken() from None
        claims = _claims(signed["payload"])
        self._check_claims(claims)
        subject, issuer = claims["sub"], claims.get("iss", "")
        principal = Principal(user_id=user_id_for(issuer, subject), subject=subject, issuer=issuer)
        return principal, float(claims["exp"])

    def _check_claims(self, claims: dict[str, Any]) -> None:
        """The registered claims, each of its RFC 7519 type and in a sane range, then their
        meaning: expiry, not-before, issued-at, issuer and audience."""
        now = time.time()
        expires = _claim(claims, "exp", _is_numeric_date, required=True)
        not_before = _claim(claims, "nbf", _is_numeric_date)
        issued_at = _claim(claims, "iat", _is_numeric_date)
        _claim(claims, "sub", _is_text, required=True)
        issuer = _claim(claims, "iss", _is_text)
        _claim(claims, "jti", _is_text)
        audience = claims.get("aud")
        if "aud" in claims and not (
            _is_text(audience)
            or (isinstance(audience, list) and audience and all(map(_is_text, audience)))
        ):
            raise InvalidToken()
        if expires is not None and expires <= now - self._leeway:
            raise InvalidToken("The token has expired.")
        for moment in (not_before, issued_at):
            if moment is not None and moment > now + self._leeway:
                raise InvalidToken("The token is not valid yet.")
        if self._issuer is not None and issuer != self._issuer:
            raise InvalidToken()
        if self._audience is not None and self._audience not in (
            [audience] if isinstance(audience, str) else audience or []
        ):
            raise InvalidToken()

    async def _key_for(self, header: dict[str, Any]) -> tuple[Any, str]:
        algorithm = header.get("alg")
        if not isinstance(algorithm, str):  # a list or an object would not even be hashable
            raise InvalidToken()
        if algorithm == "HS256" and self._hs256_key is not None:
            return self._hs256_key, algorithm
        if algorithm in ASYMMETRIC_ALGORITHMS and self._jwks is not None:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise InvalidToken()
            # KeysUnavailable (the issuer's JWKS cannot be fetched) goes to the caller.
            found = await self._jwks.key_for(kid)
            # The key decides the algorithm; the header may only agree with it.
            if found is None or algorithm not in found.algorithms:
                raise InvalidToken()
            return found.key, algorithm
        raise InvalidToken()


def issue_token(settings: Settings, subject: str, ttl_seconds: int, now: int) -> str:
    """An HS256 token the service accepts; for `tasks-api token` and for trying the API."""
    key = settings.hs256_key()
    if key is None:
        raise ConfigError("tasks-api token signs HS256 tokens and needs JWT_SECRET.")
    claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + ttl_seconds}
    if settings.jwt_issuer is not None:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience is not None:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, key, algorithm="HS256")


def bearer_token(authorization: Sequence[str]) -> str:
    """The token from the request's `Authorization` header values: exactly one, of the Bearer
    scheme (case-insensitive). Query strings and cookies never count, so they are not asked."""
    if not authorization:
        raise NoToken("A bearer token is required.")
    if len(authorization) > 1:
        raise InvalidToken("Send exactly one Authorization header.")
    scheme, _, token = authorization[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise NoToken("Use 'Authorization: Bearer <token>'.")
    return token
