"""Benchmark: the service beside a FastAPI hello world, in one run, on this machine.

    python bench/run.py [--duration 10] [--runs 5] [--workers 1 2] [--users 200]
                        [--psycopg3] [--baseline REF] [--json FILE]

Seeds a fresh database (users with 20 tasks each), starts `tasks-api serve` on loopback,
drives each endpoint with wrk (-t2 -c32) using valid tokens for many users, runs the hello
world app the same way, and prints: endpoint, req/s (median of the runs), p50, p99, and the
ratio to hello world. With --psycopg3, also bench/async_app.py (the same endpoints on raw
psycopg 3: the reference the service's ORM and framework cost is measured against). With
--baseline REF, also the service as it was at git revision REF, built into a temporary venv,
so before and after come from the same run. Needs `wrk` (Debian package `wrk`). Not a test:
it prints figures.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psycopg2
from sqlalchemy import make_url

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECRET = "benchmark-secret-" + "x" * 32
ENDPOINTS = ("list", "get", "toggle", "create")


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    name = f"tasks_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def serve(command: list[str], health_url: str, env: dict[str, str]) -> Iterator[None]:
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=HERE
    )
    try:
        wait_healthy(health_url, process)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def seed(database_url: str, users: int, tasks_per_user: int, pairs_file: Path) -> None:
    """Users with tasks, written straight to the database; tokens minted like an issuer's."""
    import jwt  # noqa: PLC0415

    connection = psycopg2.connect(database_url)
    cursor = connection.cursor()
    lines = []
    now = int(time.time())
    for _ in range(users):
        user_id = uuid.uuid4()
        cursor.execute("INSERT INTO users (id) VALUES (%s)", (str(user_id),))
        cursor.execute(
            "INSERT INTO tasks (id, user_id, title) SELECT gen_random_uuid(), %s, "
            "'seeded task ' || n FROM generate_series(1, %s) AS n RETURNING id",
            (str(user_id), tasks_per_user),
        )
        task_id = cursor.fetchone()[0]  # type: ignore[index]
        token = jwt.encode(
            {"sub": str(user_id), "iat": now, "exp": now + 86400}, SECRET, algorithm="HS256"
        )
        lines.append(f"{token} {task_id}")
    connection.commit()
    connection.close()
    pairs_file.write_text("\n".join(lines) + "\n")


_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, duration: int, env: dict[str, str], script: Path | None) -> dict[str, float]:
    command = ["wrk", "-t2", "-c32", f"-d{duration}s", "--latency"]
    if script:
        command += ["-s", str(script)]
    output = subprocess.run(
        [*command, url], env=env, capture_output=True, text=True, check=True
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    latencies = {p: float(v) * _UNITS[u] for p, v, u in _LATENCY.findall(output)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": rate,
        "p50": latencies["50"],
        "p99": latencies["99"],
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def measure(
    url: str, args: argparse.Namespace, env: dict[str, str], script: Path | None
) -> dict[str, float]:
    runs = [wrk(url, args.duration, env, script) for _ in range(args.runs)]
    best = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]  # the median run
    return {**best, "rps": statistics.median(r["rps"] for r in runs)}


def add_server_argument(parser: argparse.ArgumentParser) -> None:
    default = "postgresql://postgres@127.0.0.1:5432/postgres"
    server = os.environ.get("BENCH_DATABASE_SERVER", default)
    parser.add_argument("--server-url", default=server, help="where databases are created")


def measure_endpoints(
    label: str, base_url: str, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, dict[str, float]]:
    return {
        f"{endpoint} {label}": measure(
            base_url, args, {**env, "BENCH_MODE": endpoint}, HERE / "load.lua"
        )
        for endpoint in args.endpoints
    }


@contextmanager
def baseline_build(ref: str) -> Iterator[Path]:
    """The service at git revision `ref`, installed into a temporary venv; yields its python."""
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        source, venv = Path(tmp) / "source", Path(tmp) / "venv"
        source.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        print(f"building {ref} in {venv} ...", file=sys.stderr)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", str(source)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        yield python


# The role the service runs as: row-level security binds it, as in a real deployment.
SERVICE_ROLE = "tasks_api_bench"


@contextmanager
def prepared_database(python: Path, args: argparse.Namespace) -> Iterator[dict[str, str]]:
    """A fresh database migrated by `python`'s build, the service role granted what it needs,
    seeded; yields the environment that serves and loads it."""
    with fresh_database(args.server_url) as admin_url, tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DATABASE_URL": admin_url, "JWT_SECRET": SECRET}
        env.pop("MIGRATION_DATABASE_URL", None)
        subprocess.run([str(python), "-m", "service", "migrate"], env=env, check=True, cwd=HERE)
        pairs = Path(tmp) / "pairs.txt"
        seed(admin_url, args.users, 20, pairs)
        yield {**env, "DATABASE_URL": service_role_url(admin_url), "BENCH_FILE": str(pairs)}


def service_role_url(admin_url: str) -> str:
    """SERVICE_ROLE (created once per server), granted what requests need on admin_url's
    database; its URL there."""
    connection = psycopg2.connect(admin_url)
    connection.autocommit = True
    cursor = connection.cursor()
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (SERVICE_ROLE,))
    if cursor.fetchone() is None:
        cursor.execute(f"CREATE ROLE {SERVICE_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS")
    cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON users, tasks TO {SERVICE_ROLE}")
    connection.close()
    url = make_url(admin_url).set(username=SERVICE_ROLE, password=None)
    return url.render_as_string(hide_password=False)


def _service_command(python: Path | str, port: int, workers: int, log_level: str) -> list[str]:
    return [
        str(python),
        "-m",
        "service",
        "serve",
        "--no-migrate",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        log_level,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_argument(parser)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--endpoints", nargs="+", default=list(ENDPOINTS), choices=ENDPOINTS)
    parser.add_argument(
        "--psycopg3",
        action="store_true",
        help="also measure bench/async_app.py (the same endpoints on raw psycopg 3, async)",
    )
    parser.add_argument(
        "--baseline", metavar="REF", help="also measure the service at this git revision"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")

    results: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        baseline = stack.enter_context(baseline_build(args.baseline)) if args.baseline else None
        # Each build gets a database migrated by its own migrations, seeded the same way.
        current_env = stack.enter_context(prepared_database(Path(sys.executable), args))
        baseline_env = stack.enter_context(prepared_database(baseline, args)) if baseline else None
        env = {**os.environ, "JWT_SECRET": SECRET}

        hello_port = free_port()
        hello = [
            sys.executable,
            "-m",
            "uvicorn",
            "hello:app",
            "--port",
            str(hello_port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        for workers in args.workers:
            with serve([*hello, "--workers", str(workers)], f"http://127.0.0.1:{hello_port}/", env):
                results[f"hello world ({workers}w)"] = measure(
                    f"http://127.0.0.1:{hello_port}/", args, env, None
                )
            builds = [("", Path(sys.executable), current_env)]
            if baseline is not None and baseline_env is not None:
                builds.append((f"{args.baseline} ", baseline, baseline_env))
            for label, python, build_env in builds:
                port = free_port()
                command = _service_command(python, port, workers, args.log_level)
                with serve(command, f"http://127.0.0.1:{port}/healthz", build_env):
                    base_url = f"http://127.0.0.1:{port}"
                    results |= measure_endpoints(f"{label}({workers}w)", base_url, args, build_env)
            if args.psycopg3:
                port = free_port()
                uvicorn_app = [sys.executable, "-m", "uvicorn", "async_app:app", "--port"]
                command = [*uvicorn_app, str(port), "--workers", str(workers)]
                command += ["--log-level", "warning", "--no-access-log"]
                app_env = {**current_env, "PYTHONPATH": str(ROOT)}
                app_env["BENCH_LOG_LEVEL"] = args.log_level
                with serve(command, f"http://127.0.0.1:{port}/healthz", app_env):
                    base_url = f"http://127.0.0.1:{port}"
                    label = f"psycopg3 ({workers}w)"
                    results |= measure_endpoints(label, base_url, args, app_env)

    report(results, args)


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    print(f"\nwrk -t2 -c32 -d{args.duration}s, median of {args.runs}; {os.cpu_count()} cores\n")
    header = f"{'endpoint':<30}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'p99/p50':>9}"
    print(f"{header}{'vs hello':>10}{'vs raw':>9}{'errors':>8}")
    for name, result in results.items():
        endpoint, _, workers = name.rpartition("(")
        hello_rps = results[f"hello world ({workers}"]["rps"]
        raw = results.get(f"{endpoint.split()[0]} psycopg3 ({workers}")
        vs_raw = f"{100 * result['rps'] / raw['rps']:>8.1f}%" if raw else f"{'':>9}"
        print(
            f"{name:<30}{result['rps']:>10.0f}{result['p50']:>9.2f}{result['p99']:>9.2f}"
            f"{result['p99'] / result['p50']:>9.1f}"
            f"{100 * result['rps'] / hello_rps:>9.1f}%{vs_raw}{result['errors']:>8.0f}"
        )
    prefixes = ["", *([f"{args.baseline} "] if args.baseline else [])]
    for endpoint in (*args.endpoints, "hello world"):
        for prefix in prefixes if endpoint != "hello world" else [""]:
            name = f"{endpoint} {prefix}"
            one, two = results.get(f"{name}(1w)"), results.get(f"{name}(2w)")
            if one and two:
                print(f"{name.strip()}: 2 workers / 1 worker = {two['rps'] / one['rps']:.2f}x")
    if args.baseline:
        for name, result in results.items():
            endpoint, _, workers = name.rpartition(" (")
            before = results.get(f"{endpoint} {args.baseline} ({workers}")
            if before and args.baseline not in endpoint:
                print(
                    f"{name}: this build / {args.baseline} = {result['rps'] / before['rps']:.2f}x"
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
