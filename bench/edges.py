"""Benchmark: what the server's bounds (service/server.py) cost, and what they buy.

    python bench/edges.py [--duration 10] [--runs 3] [--half-open 2000]

Serves the same app (the service's own, on /healthz, so no database work is measured) twice
in one run: with uvicorn's stock httptools protocol and with `BoundedHttpProtocol`, and
drives each with wrk -t2 -c32. Then, against the bounded server only (the stock one keeps such
connections forever), it holds --half-open connections (half of them stopped halfway through
their headers) and times /healthz meanwhile. Prints req/s and p50/p99 per protocol, their
ratio, and the /healthz latencies under the flood. Needs `wrk` (Debian package `wrk`). Not a
test: it prints figures.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
from run import free_port, wrk  # bench/run.py, beside this script

SERVER = """
import sys, uvicorn
from service.main import create_app
from service.config import Settings
app = create_app(Settings(database_url="postgresql://postgres@127.0.0.1:1/none",
                          jwt_secret="x" * 32))
options = {"http": sys.argv[2], "ws": "none"} if sys.argv[2] != "stock" else {"http": "httptools"}
uvicorn.run(app, port=int(sys.argv[1]), log_level="warning", access_log=False, **options)
"""


@contextmanager
def serving(protocol: str) -> Iterator[tuple[str, int]]:
    """The app served with `protocol`; yields its URL and process id."""
    port = free_port()
    env = {**os.environ, "HTTP_RECEIVE_TIMEOUT_SECONDS": "30"}
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port), protocol],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait()


def under_flood(url: str, connections: int) -> list[float]:
    port = int(url.rsplit(":", 1)[1])
    with ExitStack() as held:
        for index in range(connections):
            sock = held.enter_context(socket.create_connection(("127.0.0.1", port)))
            if index % 2:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: b\r\nX-Half: ")
        timings = []
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(50):
                started = time.perf_counter()
                client.get("/healthz")
                timings.append((time.perf_counter() - started) * 1000)
                time.sleep(0.01)
    return sorted(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--half-open", type=int, default=2000)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("needs wrk: apt-get install wrk")

    protocols = {"stock httptools": "stock", "bounded": "service.server:BoundedHttpProtocol"}
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in protocols}
    with ExitStack() as servers:
        served = {name: servers.enter_context(serving(p)) for name, p in protocols.items()}
        for _ in range(args.runs):  # interleaved, so both see the same machine noise
            for name, (url, pid) in served.items():
                figures = wrk(f"{url}/healthz", args.duration, dict(os.environ), None, pid)
                results[name].append((figures["rps"], figures["p50"], figures["p99"]))
        print(f"{'protocol':<18} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        medians = {}
        for name, runs in results.items():
            rate = statistics.median(run[0] for run in runs)
            p50 = statistics.median(run[1] for run in runs)
            p99 = statistics.median(run[2] for run in runs)
            medians[name] = rate
            print(f"{name:<18} {rate:>9.0f} {p50:>8.2f} {p99:>8.2f}")
        print(f"bounded / stock: {medians['bounded'] / medians['stock httptools']:.3f}")

        timings = under_flood(served["bounded"][0], args.half_open)
        print(
            f"/healthz with {args.half_open} half-open connections held (bounded): "
            f"p50 {statistics.median(timings):.2f} ms, max {timings[-1]:.2f} ms"
        )


if __name__ == "__main__":
    main()
