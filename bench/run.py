"""Benchmark: the service beside a FastAPI hello world, in one run, on this machine.

    python bench/run.py [--duration 10] [--runs 5] [--workers 1 2] [--users 200]
                        [--psycopg3] [--tracing [RATIO ...]] [--baseline REF] [--json FILE]

Seeds a fresh database (users with 20 tasks each), starts `tasks-api serve` on loopback,
drives each endpoint with wrk (-t2 -c32) using valid tokens for many users, runs the hello
world app the same way, and prints: endpoint, req/s (median of the runs), p50, p99, the ratio
to hello world, and the CPU time per request spent by the server, by PostgreSQL (when it runs
on this machine) and by wrk. The runs go in rounds, every server once per round, so a load
that comes and goes on a shared machine lands on every build alike. With --psycopg3, also
bench/async_app.py (the same endpoints on raw psycopg 3: the reference the service's ORM and
framework cost is measured against). With --baseline REF, also the service as it was at git
revision REF, built into a temporary venv, so before and after come from the same run. With
--tracing, also this build with OpenTelemetry tracing on, every request sampled and exported
to bench/otlp_sink.py (a collector stand-in that discards what it gets). Needs
`wrk` (Debian package `wrk`). Not a test: it prints figures.
"""

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg2
from sqlalchemy import make_url

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SECRET = "benchmark-secret-" + "x" * 32
ENDPOINTS = ("list", "get", "toggle", "create")
# Measured when asked for (--endpoints ... create-key): a create with an Idempotency-Key, which
# a build before keys existed answers as a plain create.
OPTIONAL_ENDPOINTS = ("create-key",)
# Each server is loaded with its first endpoint, in chunks, until it has served this many
# requests (or for WARM_UP_MAX_SECONDS): a fresh worker serves its first 14,000-24,000
# requests more slowly, then switches to its steady pace at once (docs/PERFORMANCE.md,
# "Warm-up"); counted in requests, so that a slower build is not measured inside it.
WARM_UP_REQUESTS = 30_000
WARM_UP_CHUNK_SECONDS = 5
WARM_UP_MAX_SECONDS = 60


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
def serve(command: list[str], health_url: str, env: dict[str, str]) -> Iterator[int]:
    """Runs `command` until the block ends; yields its process id once `health_url` answers."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=HERE
    )
    try:
        wait_healthy(health_url, process)
        yield process.pid
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
_CPU_KEYS = ("server_us", "db_us", "wrk_us")


def _processes() -> dict[int, tuple[int, str, float]]:
    """Every process now: pid -> (parent pid, command name, CPU seconds used so far)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended while we looked
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        # Fields 4, 14 and 15 of proc(5): parent, user and system time (in clock ticks).
        found[int(stat.parent.name)] = (
            int(fields[1]),
            name,
            (int(fields[11]) + int(fields[12])) / ticks,
        )
    return found


def cpu_seconds(server_pid: int) -> dict[str, float]:
    """CPU time used so far by the server (its process and descendants) and by PostgreSQL's
    processes on this machine (zero when the database is elsewhere)."""
    processes = _processes()
    tree = {server_pid}
    while grown := {pid for pid, (parent, _, _) in processes.items() if parent in tree} - tree:
        tree |= grown
    server = sum(processes[pid][2] for pid in tree if pid in processes)
    database = sum(cpu for _, name, cpu in processes.values() if name.startswith("postgres"))
    return {"server": server, "db": database}


def wrk(
    url: str, duration: int, env: dict[str, str], script: Path | None, server_pid: int
) -> dict[str, float]:
    """One wrk run; its req/s, latencies, errors and the CPU time each party spent per request
    (server, database, wrk itself, in µs): on a machine where all three share the cores, what
    bounds how far a second worker can scale."""
    command = ["wrk", "-t2", "-c32", f"-d{duration}s", "--latency"]
    if script:
        command += ["-s", str(script)]
    before, wrk_before = cpu_seconds(server_pid), resource.getrusage(resource.RUSAGE_CHILDREN)
    output = subprocess.run(
        [*command, url], env=env, capture_output=True, text=True, check=True
    ).stdout
    after, wrk_after = cpu_seconds(server_pid), resource.getrusage(resource.RUSAGE_CHILDREN)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    latencies = {p: float(v) * _UNITS[u] for p, v, u in _LATENCY.findall(output)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    wrk_cpu = sum(getattr(wrk_after, f) - getattr(wrk_before, f) for f in ("ru_utime", "ru_stime"))
    per_request = 1e6 / max(requests, 1)
    return {
        "rps": rate,
        "p50": latencies["50"],
        "p99": latencies["99"],
        "errors": float(errors.group(1)) if errors else 0.0,
        "server_us": (after["server"] - before["server"]) * per_request,
        "db_us": (after["db"] - before["db"]) * per_request,
        "wrk_us": wrk_cpu * per_request,
    }


def warm_up(url: str, env: dict[str, str], script: Path | None, server_pid: int) -> None:
    served, started = 0.0, time.monotonic()
    while served < WARM_UP_REQUESTS and time.monotonic() - started < WARM_UP_MAX_SECONDS:
        served += wrk(url, WARM_UP_CHUNK_SECONDS, env, script, server_pid)["rps"] * (
            WARM_UP_CHUNK_SECONDS
        )


def summarize(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median req/s and CPU times of the runs; latencies from the run whose req/s is the
    median (a p99 is only meaningful with the p50 of the same run)."""
    middle = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
    medians = {key: statistics.median(r[key] for r in runs) for key in (*_CPU_KEYS, "rps")}
    return {**middle, **medians}


def add_server_argument(parser: argparse.ArgumentParser) -> None:
    default = "postgresql://postgres@127.0.0.1:5432/postgres"
    server = os.environ.get("BENCH_DATABASE_SERVER", default)
    parser.add_argument("--server-url", default=server, help="where databases are created")


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
        # Its own locked dependencies where it has them, as this build's venv has (tox): else
        # the two would differ by whatever was released since, not by their code.
        lock = source / "requirements" / "runtime.txt"
        if lock.exists():
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "-r", str(lock)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
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
    """A fresh database migrated by `python`'s build, seeded; yields the environment that
    serves and loads it, as SERVICE_ROLE. Migrations run as the admin and grant that role what
    requests need, as in a deployment (docs/DEPLOY.md), so every build's own tables are granted."""
    with fresh_database(args.server_url) as admin_url, tempfile.TemporaryDirectory() as tmp:
        service_url = service_role_url(admin_url)
        env = {**os.environ, "DATABASE_URL": service_url, "JWT_SECRET": SECRET}
        env["MIGRATION_DATABASE_URL"] = admin_url
        subprocess.run([str(python), "-m", "service", "migrate"], env=env, check=True, cwd=HERE)
        pairs = Path(tmp) / "pairs.txt"
        seed(admin_url, args.users, 20, pairs)
        env.pop("MIGRATION_DATABASE_URL")
        yield {**env, "BENCH_FILE": str(pairs)}


def service_role_url(admin_url: str) -> str:
    """SERVICE_ROLE (created once per server, without privileges: `migrate` grants them), and
    its URL on admin_url's database."""
    connection = psycopg2.connect(admin_url)
    connection.autocommit = True
    cursor = connection.cursor()
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (SERVICE_ROLE,))
    if cursor.fetchone() is None:
        cursor.execute(f"CREATE ROLE {SERVICE_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS")
    connection.close()
    url = make_url(admin_url).set(username=SERVICE_ROLE, password=None)
    return url.render_as_string(hide_password=False)


def _service_command(python: Path | str, workers: int, log_level: str) -> list[str]:
    return [
        str(python),
        "-m",
        "service",
        "serve",
        "--no-migrate",
        "--port",
        "{port}",
        "--workers",
        str(workers),
        "--log-level",
        log_level,
    ]


@dataclass(frozen=True)
class Server:
    """One thing to serve and load: its command ("{port}" filled in), environment, endpoints."""

    label: str
    workers: int
    command: list[str]
    env: dict[str, str]
    endpoints: list[str]
    health_path: str = "/healthz"


def servers_to_measure(
    args: argparse.Namespace,
    current_env: dict[str, str],
    baseline: Path | None,
    baseline_env: dict[str, str] | None,
) -> Iterator[Server]:
    hello_env = {**os.environ, "JWT_SECRET": SECRET}
    for workers in args.workers:
        hello = [sys.executable, "-m", "uvicorn", "hello:app", "--port", "{port}"]
        hello += ["--workers", str(workers), "--log-level", "warning", "--no-access-log"]
        yield Server("", workers, hello, hello_env, ["hello world"], health_path="/")
        for storage in args.rate_limit_storage:
            # The limiter on, counting every request, but with a budget no run exhausts; or,
            # for "off", both policies off (what the limiter costs, measured in one build).
            limits = {
                "RATE_LIMIT_STORAGE_URL": storage,
                "RATE_LIMIT_USER_REQUESTS": "1000000000",
                "RATE_LIMIT_KEY_PREFIX": f"bench-{uuid.uuid4().hex}",
            }
            if storage == "off":
                limits = {"RATE_LIMIT_USER_REQUESTS": "0", "RATE_LIMIT_ADDRESS_REQUESTS": "0"}
            label = "" if storage == args.rate_limit_storage[0] else f"{storage.split(':')[0]} "
            yield Server(
                label,
                workers,
                _service_command(sys.executable, workers, args.log_level),
                {**current_env, **limits},
                args.endpoints,
            )
        for ratio in args.tracing or []:
            # This build with tracing on, exporting to the sink: every request sampled, or
            # this share of them.
            traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": args.otlp_sink}
            if ratio >= 1:
                traced["OTEL_TRACES_SAMPLER"] = "always_on"
            else:
                traced["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
                traced["OTEL_TRACES_SAMPLER_ARG"] = str(ratio)
            label = "traced " if ratio >= 1 else f"traced {ratio:g} "
            command = _service_command(sys.executable, workers, args.log_level)
            yield Server(label, workers, command, {**current_env, **traced}, args.endpoints)
        if baseline is not None and baseline_env is not None:
            command = _service_command(baseline, workers, args.log_level)
            yield Server(f"{args.baseline} ", workers, command, baseline_env, args.endpoints)
        if args.psycopg3:
            raw = [sys.executable, "-m", "uvicorn", "async_app:app", "--port", "{port}"]
            raw += ["--workers", str(workers), "--log-level", "warning", "--no-access-log"]
            raw_env = {**current_env, "PYTHONPATH": str(ROOT), "BENCH_LOG_LEVEL": args.log_level}
            yield Server("psycopg3 ", workers, raw, raw_env, args.endpoints)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_argument(parser)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--endpoints", nargs="+", default=list(ENDPOINTS), choices=ENDPOINTS + OPTIONAL_ENDPOINTS
    )
    parser.add_argument(
        "--psycopg3",
        action="store_true",
        help="also measure bench/async_app.py (the same endpoints on raw psycopg 3, async)",
    )
    parser.add_argument(
        "--baseline", metavar="REF", help="also measure the service at this git revision"
    )
    parser.add_argument(
        "--rate-limit-storage",
        nargs="+",
        default=["memory://"],
        metavar="URL",
        help="measure this build once per RATE_LIMIT_STORAGE_URL (memory://, redis://...), "
        "the limiter counting every request with a budget no run exhausts; `off` measures it "
        "with both policies off",
    )
    parser.add_argument(
        "--tracing",
        nargs="*",
        type=float,
        metavar="RATIO",
        help="also measure this build with tracing on (OpenTelemetry), once per sampling "
        "ratio (none given: 1, every request sampled), exporting over OTLP/HTTP to "
        "bench/otlp_sink.py, which discards the spans",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")

    runs: dict[str, list[dict[str, float]]] = {}
    with ExitStack() as stack:
        if args.tracing is not None:
            args.tracing = args.tracing or [1.0]
            sink_port = free_port()
            sink = [sys.executable, str(HERE / "otlp_sink.py"), str(sink_port)]
            args.otlp_sink = f"http://127.0.0.1:{sink_port}"
            stack.enter_context(serve(sink, args.otlp_sink + "/", dict(os.environ)))
        baseline = stack.enter_context(baseline_build(args.baseline)) if args.baseline else None
        # Each build gets a database migrated by its own migrations, seeded the same way.
        current_env = stack.enter_context(prepared_database(Path(sys.executable), args))
        baseline_env = stack.enter_context(prepared_database(baseline, args)) if baseline else None
        servers = list(servers_to_measure(args, current_env, baseline, baseline_env))
        # Rounds, not blocks: every server is measured once per round, so a neighbour's load
        # that comes and goes on this shared machine lands on all of them alike instead of on
        # whichever block it happened to overlap.
        for round_ in range(1, args.runs + 1):
            print(f"round {round_} of {args.runs} ...", file=sys.stderr)
            # Each round starts one server further on: none is always measured first (on a
            # database the others' creates have not grown yet) or always after the same one.
            shift = (round_ - 1) % len(servers)
            for server in servers[shift:] + servers[:shift]:
                port = free_port()
                command = [part.replace("{port}", str(port)) for part in server.command]
                base_url = f"http://127.0.0.1:{port}"
                with serve(command, base_url + server.health_path, server.env) as pid:
                    # Warm-up: WARM_UP_REQUESTS of the first endpoint, the same for every
                    # build, so each is measured in its steady state, its pool open and past
                    # the slower first requests of a fresh worker ("Warm-up").
                    warm_env = {**server.env, "BENCH_MODE": server.endpoints[0]}
                    first_script = (
                        HERE / "load.lua" if server.endpoints[0] != "hello world" else None
                    )
                    warm_url = base_url + ("/" if first_script is None else "")
                    warm_up(warm_url, warm_env, first_script, pid)
                    for endpoint in server.endpoints:
                        env = {**server.env, "BENCH_MODE": endpoint}
                        script = HERE / "load.lua" if endpoint != "hello world" else None
                        url = base_url + ("/" if script is None else "")
                        name = f"{endpoint} {server.label}({server.workers}w)"
                        runs.setdefault(name, []).append(wrk(url, args.duration, env, script, pid))
    results = {name: summarize(measured) for name, measured in runs.items()}
    report(results, args)


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    print(f"\nwrk -t2 -c32 -d{args.duration}s, median of {args.runs}; {os.cpu_count()} cores\n")
    header = f"{'endpoint':<30}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'p99/p50':>9}"
    print(f"{header}{'vs hello':>10}{'vs raw':>9}{'errors':>8}   CPU µs/request: server db wrk")
    for name, result in results.items():
        endpoint, _, workers = name.rpartition("(")
        hello_rps = results[f"hello world ({workers}"]["rps"]
        raw = results.get(f"{endpoint.split()[0]} psycopg3 ({workers}")
        vs_raw = f"{100 * result['rps'] / raw['rps']:>8.1f}%" if raw else f"{'':>9}"
        print(
            f"{name:<30}{result['rps']:>10.0f}{result['p50']:>9.2f}{result['p99']:>9.2f}"
            f"{result['p99'] / result['p50']:>9.1f}"
            f"{100 * result['rps'] / hello_rps:>9.1f}%{vs_raw}{result['errors']:>8.0f}"
            f"{result['server_us']:>12.0f}{result['db_us']:>6.0f}{result['wrk_us']:>5.0f}"
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
            label, _, workers = name.rpartition(" (")
            endpoint = label.split(" ")[0]  # "list", of "list" or "list redis"
            before = results.get(f"{endpoint} {args.baseline} ({workers}")
            if before and args.baseline not in label:
                print(
                    f"{name}: this build / {args.baseline} = {result['rps'] / before['rps']:.2f}x"
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
