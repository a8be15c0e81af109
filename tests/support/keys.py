"""Signing keys made in the tests, and a JWKS for them served on loopback.

Nothing here reaches the network: the JWKS is a tiny HTTP server on 127.0.0.1.
"""

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, RSAPSSAlgorithm

_EXPORTERS: dict[str, Any] = {
    "EdDSA": OKPAlgorithm,
    "ES256": ECAlgorithm,
    "RS256": RSAAlgorithm,
    "PS256": RSAPSSAlgorithm,
}


@dataclass(frozen=True)
class SigningKey:
    """A private key with the kid and algorithm an issuer would publish it under."""

    algorithm: str
    private: Any
    kid: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(
            _EXPORTERS[self.algorithm].to_jwk(self.private.public_key())
        )
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        headers = {"kid": self.kid, **header}
        return jwt.encode(claims, self.private, algorithm=self.algorithm, headers=headers)


def new_key(algorithm: str) -> SigningKey:
    if algorithm == "EdDSA":
        return SigningKey(algorithm, ed25519.Ed25519PrivateKey.generate())
    if algorithm == "ES256":
        return SigningKey(algorithm, ec.generate_private_key(ec.SECP256R1()))
    return SigningKey(algorithm, rsa.generate_private_key(public_exponent=65537, key_size=2048))


# A JWKS is accepted only with JWT_ISSUER and JWT_AUDIENCE set; these are the tests' values.
JWKS_ISSUER = "https://issuer.example.com"
JWKS_AUDIENCE = "secure-tasks-api"


def claims(sub: str | None = None, lifetime: int = 300, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": sub or uuid.uuid4().hex,
        "iat": now,
        "exp": now + lifetime,
        "iss": JWKS_ISSUER,
        "aud": JWKS_AUDIENCE,
        **extra,
    }


class JwksServer:
    """Serves {"keys": [...]} at /jwks; can be taken down; counts the fetches it answered."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.up = True
        # Seconds between bytes of the answer; 0 sends it at once. A trickle is how a
        # JWKS endpoint holds a client whose timeout bounds each read but not the whole fetch.
        self.trickle = 0.0
        self.fetches = 0
        self.requests: list[str] = []
        # The header fields of each request, as received (a traceparent, say).
        self.request_headers: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                server.request_headers.append({k.lower(): v for k, v in self.headers.items()})
                if not server.up:
                    self.send_response(503)
                    self.end_headers()
                    return
                server.fetches += 1
                body = json.dumps({"keys": server.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not server.trickle:
                    self.wfile.write(body)
                    return
                try:
                    for index in range(len(body)):
                        self.wfile.write(body[index : index + 1])
                        self.wfile.flush()
                        time.sleep(server.trickle)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the service gave up on the fetch, as it should

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/jwks"

    def publish(self, *keys: SigningKey) -> None:
        self.keys = [key.public_jwk for key in keys]

    @contextmanager
    def running(self) -> Iterator["JwksServer"]:
        thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._httpd.shutdown()
            self._httpd.server_close()
            thread.join(timeout=5)
