"""Serving an app for real: uvicorn on a loopback port, in this process or in a child one."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from service.http.server import server_options


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", **server_options())
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def cli(*args: str) -> list[str]:
    """The `tasks-api` command, run with this interpreter."""
    return [sys.executable, "-m", "service", *args]


@dataclass
class RunningService:
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def json_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far; a line still being written (no newline yet) is
        left for the next read."""
        complete = self.output().rpartition("\n")[0]
        return [json.loads(line) for line in complete.splitlines() if line.startswith("{")]


@contextmanager
def service_process(
    *args: str, env: Mapping[str, str], port: int | None = None, log_level: str = "warning"
) -> Iterator[RunningService]:
    """`tasks-api serve` as a child process, its output in a file; stopped with SIGTERM.

    Rate limits are off unless `env` sets them, as in make_settings: a suite sends one
    address's requests faster than any client (tests/security/test_rate_limits.py)."""
    env = {"RATE_LIMIT_USER_REQUESTS": "0", "RATE_LIMIT_ADDRESS_REQUESTS": "0", **env}
    port = port or free_port()
    command = cli("serve", "--port", str(port), "--log-level", log_level, *args)
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "service.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                command, env={**os.environ, **env}, stdout=sink, stderr=subprocess.STDOUT
            )
        running = RunningService(f"http://127.0.0.1:{port}", process, log)
        try:
            wait_until_healthy(running)
            yield running
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_healthy(service: RunningService, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(
                f"tasks-api exited with {service.process.returncode}:\n{service.output()}"
            )
        try:
            if httpx.get(f"{service.base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"tasks-api did not become healthy in time:\n{service.output()}")
