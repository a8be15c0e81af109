"""Who is on the other end of the connection, for the per-address rate limit.

The socket's peer, unless it is one of TRUSTED_PROXIES: then the address its proxies recorded
(`Forwarded`'s `for=`, else `X-Forwarded-For`), read from the right, past every trusted proxy,
as far as the first address no trusted proxy could have written. Without TRUSTED_PROXIES those
fields are ignored, so no client can pick its own bucket by sending one. (uvicorn's own
handling of them is off: `server_options`.)
"""

import ipaddress
import re
from collections.abc import Sequence

from starlette.types import Scope

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_FORWARDED_FOR = re.compile(r'(?:^|[;,\s])for=("?)([^";,\s]+)\1', re.IGNORECASE)
UNKNOWN = "unknown"


def _address(text: str) -> IPAddress | None:
    """An address as a proxy wrote it: bare, `[v6]`, `v4:port` or `[v6]:port`."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _forwarded_chain(scope: Scope) -> list[str]:
    """The addresses the proxies recorded, nearest last."""
    forwarded = [value for name, value in scope["headers"] if name == b"forwarded"]
    if forwarded:
        text = ",".join(value.decode("latin-1") for value in forwarded)
        return [match.group(2) for match in _FORWARDED_FOR.finditer(text)]
    chain: list[str] = []
    for name, value in scope["headers"]:
        if name == b"x-forwarded-for":
            chain.extend(part for part in value.decode("latin-1").split(",") if part.strip())
    return chain


def client_address(scope: Scope, trusted: Sequence[IPNetwork]) -> IPAddress | None:
    """The client's address, or None when the connection has none (a Unix socket, a test)."""
    client = scope.get("client")
    peer = _address(client[0]) if client else None
    if peer is None or not trusted or not any(peer in network for network in trusted):
        return peer
    for recorded in reversed(_forwarded_chain(scope)):
        address = _address(recorded)
        if address is None:  # `unknown`, an obfuscated name: nothing to trust past it
            return peer
        if not any(address in network for network in trusted):
            return address
        peer = address
    return peer


def bucket_of(address: IPAddress | None) -> str:
    """The rate-limit bucket of an address: an IPv4 address, or the /64 an IPv6 one is in (a
    single IPv6 client usually holds a whole /64)."""
    if address is None:
        return UNKNOWN
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
