"""Runs the compiled TypeScript client (dist/usage.js) and the README's snippet (dist/readme.js)
against a live `tasks-api serve` on an
embedded PostgreSQL; part of `tox -e client-ts`."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.support.live import cli, service_process  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tasks-api-ts-") as scratch:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "JWT_SECRET")}
        env["TASKS_API_DATA_DIR"] = scratch
        # A small quota, so that the client meets 429s and shows it waits as they ask.
        limits = {"RATE_LIMIT_USER_REQUESTS": "10", "RATE_LIMIT_USER_WINDOW_SECONDS": "2"}
        with service_process(env={**env, **limits}) as service:
            token, snippet_token = (
                subprocess.run(
                    cli("token", "--sub", sub),
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=60,
                ).stdout.strip()
                for sub in ("typescript-client", "readme-snippet")
            )
            result = subprocess.run(
                ["node", str(HERE / "dist" / "usage.js"), service.base_url, token],
                check=False,
                timeout=120,
            )
            # The README's snippet, as written, against the same server.
            snippet = subprocess.run(
                ["node", str(HERE / "dist" / "readme.js")],
                env={**env, "TASKS_API_URL": service.base_url, "TOKEN": snippet_token},
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
    print(f"README snippet: exit {snippet.returncode}: {snippet.stdout.strip()} {snippet.stderr}")
    if snippet.returncode != 0 or not snippet.stdout.startswith("Buy milk "):
        sys.exit(1)
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
