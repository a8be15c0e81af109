"""Talking HTTP/1.1 by hand, for requests no client library would send."""

import json
import socket
from dataclasses import dataclass
from typing import Any


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_until_closed(sock: socket.socket, within: float) -> bytes:
    """Everything the server sends until it closes the connection; fails past `within`."""
    sock.settimeout(within)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def status_and_headers(response: bytes) -> tuple[int, dict[str, str]]:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:])
    return int(head[0].split(" ")[1]), {name.lower(): value for name, value in headers.items()}


def server_answer(port: int, request: bytes, within: float) -> tuple[int, dict[str, str]]:
    """Send `request` on a new connection; the status and headers the server answers with
    before it closes the connection."""
    with connect(port) as sock:
        sock.sendall(request)
        return status_and_headers(read_until_closed(sock, within=within))


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(port: int, request: bytes, within: float = 10) -> Reply:
    """Send one request (ask for `Connection: close` in it) and read the whole answer."""
    with connect(port) as sock:
        sock.sendall(request)
        response = read_until_closed(sock, within=within)
    status, headers = status_and_headers(response)
    return Reply(status, headers, response.split(b"\r\n\r\n", 1)[1])


def chunked(*chunks: bytes, trailer: bytes = b"") -> bytes:
    """A chunked body: each chunk with its size, the last chunk, an optional trailer."""
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    return body + b"0\r\n" + trailer + b"\r\n"
