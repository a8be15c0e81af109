"""Flat cost at scale: the same operations on a database with 1,000 tasks and on one with
1,000,000 tasks (10,000 users, one of whom owns 100,000), latency compared.

    python bench/scale.py [--requests 300]

Seeds both databases on the server at BENCH_DATABASE_SERVER (default: the local PostgreSQL),
serves each with one `tasks-api serve` worker, and times each operation sequentially (one
request at a time, so the figure is the cost of the request, not of queueing). Prints median
and p95 per operation and the large/small ratio of the medians. Not a test: it prints figures.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
import jwt
import psycopg2
from run import (
    ROOT,
    SECRET,
    add_server_argument,
    free_port,
    fresh_database,
    serve,
    service_role_url,
)

HEAVY = "11111111-1111-4111-8111-111111111111"


def seed(database_url: str, users: int, tasks_per_user: int, heavy_tasks: int) -> None:
    connection = psycopg2.connect(database_url)
    cursor = connection.cursor()
    started = time.monotonic()
    cursor.execute("INSERT INTO users (id) VALUES (%s)", (HEAVY,))
    cursor.execute(
        "INSERT INTO users (id) SELECT gen_random_uuid() FROM generate_series(1, %s)", (users - 1,)
    )
    # Spread creation times over a year, so keyset order is not insertion order.
    cursor.execute(
        "INSERT INTO tasks (id, user_id, title, completed, created_at, updated_at) "
        "SELECT gen_random_uuid(), u.id, 'seeded task', random() < 0.3, t, t FROM users u, "
        "LATERAL (SELECT now() - random() * interval '365 days' AS t "
        "         FROM generate_series(1, %s) WHERE u.id <> %s) s",
        (tasks_per_user, HEAVY),
    )
    cursor.execute(
        "INSERT INTO tasks (id, user_id, title, completed, created_at, updated_at) "
        "SELECT gen_random_uuid(), %s, 'heavy user task', random() < 0.3, t, t FROM "
        "(SELECT now() - random() * interval '365 days' AS t FROM generate_series(1, %s)) s",
        (HEAVY, heavy_tasks),
    )
    connection.commit()
    connection.autocommit = True
    connection.cursor().execute("VACUUM ANALYZE")
    cursor = connection.cursor()
    cursor.execute("SELECT count(*) FROM tasks")
    count = cursor.fetchone()[0]  # type: ignore[index]
    connection.close()
    print(f"  seeded {count:,} tasks in {time.monotonic() - started:.0f}s", flush=True)


def timed(api: httpx.Client, method: str, url: str, **kwargs: object) -> float:
    started = time.perf_counter()
    response = api.request(method, url, **kwargs)  # type: ignore[arg-type]
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code >= 300:
        raise RuntimeError(f"{method} {url}: {response.status_code} {response.text}")
    return elapsed


def measure(base_url: str, requests: int) -> dict[str, list[float]]:
    now = int(time.time())
    token = jwt.encode({"sub": HEAVY, "iat": now, "exp": now + 3600}, SECRET, algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as api:
        # A cursor deep into the heavy user's list, reached page by page.
        page = api.get("/api/tasks", params={"limit": 50}).json()
        deep_cursor, pages = page["next_cursor"], 1
        while page["next_cursor"] and pages < 1000:
            deep_cursor = page["next_cursor"]
            page = api.get("/api/tasks", params={"limit": 50, "cursor": deep_cursor}).json()
            pages += 1
        print(f"  deep cursor after {(pages - 1) * 50:,} tasks", flush=True)
        task_id = api.get("/api/tasks", params={"limit": 1}).json()["tasks"][0]["id"]
        operations = {
            "first page": ("GET", "/api/tasks", {"params": {"limit": 50}}),
            "deep page": ("GET", "/api/tasks", {"params": {"limit": 50, "cursor": deep_cursor}}),
            "filtered list": ("GET", "/api/tasks", {"params": {"limit": 50, "completed": "true"}}),
            "get": ("GET", f"/api/tasks/{task_id}", {}),
            "toggle": ("PATCH", f"/api/tasks/{task_id}/complete", {}),
            "patch": ("PATCH", f"/api/tasks/{task_id}", {"json": {"title": "renamed"}}),
            "create": ("POST", "/api/tasks", {"json": {"title": "new"}}),
        }
        for method, url, kwargs in operations.values():  # warm up
            for _ in range(20):
                timed(api, method, url, **kwargs)
        return {
            name: [timed(api, method, url, **kwargs) for _ in range(requests)]
            for name, (method, url, kwargs) in operations.items()
        }


def run(
    server_url: str, users: int, per_user: int, heavy: int, requests: int
) -> dict[str, list[float]]:
    with fresh_database(server_url) as database_url, tempfile.TemporaryDirectory():
        # Served as a role that row-level security binds, as deployed; migrations (as the
        # admin) grant it what requests need.
        env = {**os.environ, "DATABASE_URL": service_role_url(database_url), "JWT_SECRET": SECRET}
        env["MIGRATION_DATABASE_URL"] = database_url
        subprocess.run([sys.executable, "-m", "service", "migrate"], env=env, check=True, cwd=ROOT)
        del env["MIGRATION_DATABASE_URL"]
        seed(database_url, users, per_user, heavy)
        port = free_port()
        command = [sys.executable, "-m", "service", "serve", "--no-migrate", "--port", str(port)]
        with serve(command, f"http://127.0.0.1:{port}/healthz", env):
            return measure(f"http://127.0.0.1:{port}", requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_argument(parser)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    print("1,000 tasks (10 users, the heavy one with 100):", flush=True)
    small = run(args.server_url, 10, 100, 100, args.requests)
    print("1,000,000 tasks (10,000 users, the heavy one with 100,000):", flush=True)
    large = run(args.server_url, 10_000, 90, 100_000, args.requests)

    print(f"\nsequential requests, {args.requests} each; latency in ms\n")
    print(f"{'operation':<16}{'1k p50':>9}{'1k p95':>9}{'1M p50':>9}{'1M p95':>9}{'1M/1k':>8}")
    for name in small:
        s50, l50 = statistics.median(small[name]), statistics.median(large[name])
        s95 = statistics.quantiles(small[name], n=20)[-1]
        l95 = statistics.quantiles(large[name], n=20)[-1]
        print(f"{name:<16}{s50:>9.2f}{s95:>9.2f}{l50:>9.2f}{l95:>9.2f}{l50 / s50:>7.2f}x")


if __name__ == "__main__":
    main()
