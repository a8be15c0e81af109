"""Public keys of an asymmetric token issuer, fetched from its JWKS URL and cached.

The signing algorithm is fixed by each key's type: a token's `alg` header can only name the
algorithm its key already implies, never pick the verification method.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from jwt import PyJWK
from jwt.exceptions import PyJWKError
from opentelemetry.propagate import inject
from opentelemetry.trace import Span, SpanKind, Tracer

from service import strict_json
from service.tracing import failed

log = logging.getLogger(__name__)


class KeysUnavailable(Exception):
    """The JWKS could not be fetched and no usable key is cached."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    key: Any
    algorithms: frozenset[str]


def _algorithms_for(jwk: dict[str, Any]) -> frozenset[str]:
    """What a key may verify, decided by its type alone (and its `alg`, if it names one)."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "OKP" and crv == "Ed25519":
        allowed = frozenset({"EdDSA"})
    elif kty == "EC" and crv == "P-256":
        allowed = frozenset({"ES256"})
    elif kty == "RSA":
        allowed = frozenset({"RS256", "PS256"})
    else:
        # Symmetric ("oct") keys and other curves are never taken from a JWKS.
        return frozenset()
    declared = jwk.get("alg")
    return allowed & {declared} if declared else allowed


def _parse(document: Any) -> dict[str, VerificationKey]:
    keys: dict[str, VerificationKey] = {}
    entries = document.get("keys") if isinstance(document, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        algorithms = _algorithms_for(entry)
        if not algorithms:
            continue
        try:
            key = PyJWK.from_dict(entry, algorithm=sorted(algorithms)[0]).key
        except (PyJWKError, ValueError, TypeError, KeyError):
            log.warning("skipping a JWKS key that does not parse", extra={"kid": entry["kid"]})
            continue
        keys[entry["kid"]] = VerificationKey(key=key, algorithms=algorithms)
    return keys


# A JWKS holds a handful of keys; a larger answer is not one, and is not read to the end.
MAX_JWKS_BYTES = 256 * 1024


class JwksCache:
    """Keys by `kid`, refetched when older than `ttl` or when a token names an unknown kid,
    but never more often than every `min_refresh` seconds.

    A request whose key is cached never waits for the JWKS endpoint: when the cache is stale,
    it uses the cached key and a refresh runs in the background. Only a token whose kid is
    unknown waits, and for at most `timeout` seconds for the whole fetch (connecting, the
    answer trickling in, everything), not per read.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float,
        min_refresh: float,
        timeout: float,
        on_fetch: Callable[[bool], None] = lambda ok: None,
        tracer: Tracer | None = None,
    ) -> None:
        self._url = url
        self._tracer = tracer
        self._on_fetch = on_fetch
        self._ttl = ttl
        self._min_refresh = min_refresh
        self._timeout = timeout
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at = -float("inf")
        self._attempted_at = -float("inf")
        self._last_attempt_failed = False
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None

    async def key_for(self, kid: str) -> VerificationKey | None:
        """The issuer's key with this id, or None if it has none.

        Raises KeysUnavailable when the key is not cached and the JWKS could not be fetched.
        """
        key = self._keys.get(kid)
        if key is not None:
            if time.monotonic() - self._fetched_at > self._ttl:
                self._refresh_in_background()
            return key
        await self._refresh()
        key = self._keys.get(kid)
        if key is None and self._last_attempt_failed:
            raise KeysUnavailable
        return key

    def _refresh_in_background(self) -> None:
        if self._background is None or self._background.done():
            # Kept in an attribute: the event loop holds only a weak reference to a task.
            self._background = asyncio.create_task(self._refresh())

    async def _refresh(self) -> None:
        async with self._lock:
            # Rate limit; also, whoever waited on the lock finds the fetch just done.
            if time.monotonic() - self._attempted_at < self._min_refresh:
                return
            self._attempted_at = time.monotonic()
            try:
                async with asyncio.timeout(self._timeout):
                    keys = _parse(await self._fetch())
            except (TimeoutError, httpx.HTTPError, ValueError) as error:
                # Keys already cached stay in use; only a good fetch replaces them.
                log.warning("JWKS fetch from %s failed: %s", self._url, type(error).__name__)
                self._last_attempt_failed = True
                self._on_fetch(False)
                return
            self._on_fetch(True)
            self._keys = keys
            self._fetched_at = time.monotonic()
            self._last_attempt_failed = False

    async def _fetch(self) -> Any:
        if self._tracer is None:
            return await self._get({})
        url = httpx.URL(self._url)
        attributes: dict[str, str | int] = {
            "http.request.method": "GET",
            "server.address": url.host,
            "server.port": url.port or (443 if url.scheme == "https" else 80),
            # Without user, password, query or fragment, should the URL carry any.
            "url.full": str(url.copy_with(userinfo=b"", query=None, fragment=None)),
        }
        with self._tracer.start_as_current_span(
            "GET",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            headers: dict[str, str] = {}
            inject(headers)  # the issuer sees the fetch as part of this trace (traceparent)
            try:
                return await self._get(headers, span)
            except Exception as error:
                failed(span, error)
                raise

    async def _get(self, headers: dict[str, str], span: Span | None = None) -> Any:
        async with (
            httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client,
            client.stream("GET", self._url, headers=headers) as response,
        ):
            if span is not None:
                span.set_attribute("http.response.status_code", response.status_code)
            response.raise_for_status()
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
        return strict_json.loads(bytes(body))
