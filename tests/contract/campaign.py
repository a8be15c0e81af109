"""The schemathesis CLI against a live `tasks-api serve` over HTTP.

All phases (examples, coverage, fuzzing, stateful), positive and negative data, every check
(object_level_authorization included, with two identities as peers).

    python -m tests.contract.campaign [--max-examples N] [--max-time S] [--seed N]

runs a campaign on its own: it starts `tasks-api serve` on loopback (on DATABASE_URL, or on an
embedded PostgreSQL), mints tokens for two users, and prints schemathesis' report. `tox -e fuzz`
runs it with a large budget and a random seed; tests/contract/test_campaign.py runs it small
and seeded on every `tox`.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.live import cli, service_process

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CONTRACT = ROOT / "contracts" / "openapi.yaml"


def _token(sub: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        cli("token", "--sub", sub, "--ttl", "86400"),
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip()


def write_wfc_file(path: Path, tokens: dict[str, str]) -> None:
    entries = [
        {"name": name, "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {token}"}]}
        for name, token in tokens.items()
    ]
    path.write_text(json.dumps({"auth": entries}))


def run_schemathesis(
    base_url: str,
    env: dict[str, str],
    work_dir: Path,
    *,
    max_examples: int,
    seed: int,
    max_time: int | None = None,
) -> subprocess.CompletedProcess[str]:
    wfc = work_dir / "wfc.json"
    write_wfc_file(wfc, {name: _token(f"campaign-{name}-{seed}", env) for name in ("alice", "bob")})
    schemathesis = Path(sys.executable).parent / "schemathesis"
    command = [
        str(schemathesis),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        str(CONTRACT),
        "--url",
        base_url,
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--mode",
        "all",
        "--checks",
        "all",
        "--max-examples",
        str(max_examples),
        "--seed",
        str(seed),
        "--report",
        "ndjson",
        "--report-dir",
        str(work_dir / "report"),
        *(["--max-time", str(max_time)] if max_time else []),
    ]
    return subprocess.run(
        command,
        env={
            **env,
            "TASKS_API_WFC_FILE": str(wfc),
            "SCHEMATHESIS_HOOKS": "tests.contract.hooks",
            "PYTHONPATH": str(ROOT),
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=(max_time or 600) + 300,
    )


def checks_run(work_dir: Path) -> dict[str, int]:
    """How often each check ran, from the ndjson event report."""
    counts: dict[str, int] = {}
    for report in (work_dir / "report").glob("*.ndjson"):
        for line in report.read_text().splitlines():
            for check in _check_names(json.loads(line)):
                counts[check] = counts.get(check, 0) + 1
    return counts


def _check_names(event: object) -> list[str]:
    found: list[str] = []
    if isinstance(event, dict):
        if isinstance(event.get("name"), str) and "status" in event and "checks" not in event:
            found.append(event["name"])
        for value in event.values():
            found.extend(_check_names(value))
    elif isinstance(event, list):
        for value in event:
            found.extend(_check_names(value))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=500)
    parser.add_argument("--max-time", type=int, default=None, help="seconds for the whole run")
    parser.add_argument("--seed", type=int, default=None, help="default: random")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**31)

    with tempfile.TemporaryDirectory(prefix="tasks-api-fuzz-") as scratch:
        work_dir = Path(scratch)
        env = dict(os.environ)
        env.setdefault("TASKS_API_DATA_DIR", str(work_dir / "data"))
        with service_process(env=env) as service:
            print(f"fuzzing {service.base_url} with seed {seed}", flush=True)
            result = run_schemathesis(
                service.base_url,
                env,
                work_dir,
                max_examples=args.max_examples,
                seed=seed,
                max_time=args.max_time,
            )
        print(result.stdout)
        print(result.stderr, file=sys.stderr)
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
