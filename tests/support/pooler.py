"""PgBouncer in transaction mode in front of a test database, as Neon's -pooler endpoints run.

A real PgBouncer (Debian package `pgbouncer`) with its stock settings for what clients may
send: it refuses startup options such as `options=-c statement_timeout=…`, and hands each
transaction whichever server connection is free, so anything a client leaves on a session
(a SET, a prepared statement) shows up on another client's transactions.
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import make_url

PACKAGE = "pgbouncer"


def pgbouncer_binary() -> str:
    """The pgbouncer executable, or a skip that names the package to install."""
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    if found is None:
        pytest.skip(f"pgbouncer is not installed (Debian package {PACKAGE})")
    return found


def _run_as(socket_dir: str | None) -> str | None:
    """PgBouncer refuses to run as root: as root, run it as a user that can reach the server."""
    if os.geteuid() != 0:
        return None
    if socket_dir is not None:
        return pwd.getpwuid(Path(socket_dir).stat().st_uid).pw_name
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name).pw_name
        except KeyError:
            continue
    pytest.skip("pgbouncer cannot run as root and no other user exists to run it")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {process.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"pgbouncer did not listen in time:\n{log.read_text()}")


@contextmanager
def pgbouncer(
    database_url: str, *, client_password: str | None = None, pool_size: int = 20
) -> Iterator[str]:
    """PgBouncer (transaction mode) on a free loopback port in front of `database_url`'s
    server; yields the same database's URL through it.

    With `client_password`, clients must log in with it (as the server's user), as they must
    on Neon; otherwise any client gets in. `pool_size` server connections serve all clients.
    """
    binary = pgbouncer_binary()
    target = make_url(database_url)
    socket_dir = target.query.get("host")
    socket_dir = socket_dir if isinstance(socket_dir, str) else None
    host = socket_dir or target.host or "127.0.0.1"
    server = f"host={host} port={target.port or 5432} user={target.username or 'postgres'}"
    if target.password:
        server += f" password={target.password}"
    port = _free_port()
    user = _run_as(socket_dir)
    with tempfile.TemporaryDirectory(prefix="pgbouncer-") as scratch:
        directory = Path(scratch)
        log = directory / "pgbouncer.log"
        config = directory / "pgbouncer.ini"
        users = directory / "userlist.txt"
        users.write_text(f'"{target.username or "postgres"}" "{client_password}"\n')
        # Without a client password every client logs in as the server's user.
        auth = "plain" if client_password else "any"
        config.write_text(
            "[databases]\n"
            f"* = {server}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {port}\n"
            "unix_socket_dir =\n"
            f"auth_type = {auth}\n"
            f"auth_file = {users}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 500\n"
            # Reconnect to a server that came back within a second, not the stock 15.
            "server_login_retry = 1\n"
            f"logfile = {log}\n"
            f"pidfile = {directory / 'pgbouncer.pid'}\n"
        )
        log.touch()
        command = [binary, "-q", str(config)]
        if user is not None:
            for path in (directory, config, log, users):
                shutil.chown(path, user=user)
            command[1:1] = ["-u", user]
        with log.open("ab") as sink:  # what it says before it opens its log file
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        try:
            _wait_for_port(port, process, log)
            through = target.set(host="127.0.0.1", port=port, password=client_password, query={})
            yield through.render_as_string(hide_password=False)
        finally:
            process.send_signal(signal.SIGINT)  # SIGINT: shut down at once
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
