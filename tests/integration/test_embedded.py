"""Zero setup: with DATABASE_URL unset the service runs on an embedded PostgreSQL."""

import os
import stat
import subprocess
from pathlib import Path

import httpx

from tests.support.live import cli, service_process
from tests.support.tokens import bearer


def _no_database_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "JWT_SECRET"}}
    env.pop("BETTER_AUTH_SECRET", None)
    return {**env, "TASKS_API_DATA_DIR": str(data_dir)}


def test_embedded_mode_serves_and_keeps_data_and_secret_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = _no_database_env(data_dir)

    def token() -> str:
        result = subprocess.run(
            cli("token", "--sub", "embedded-user"),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout.strip()

    migrated = subprocess.run(
        cli("migrate"), env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert migrated.returncode == 0, migrated.stderr
    assert "database schema is up to date" in migrated.stdout
    assert (data_dir / "pgdata" / "PG_VERSION").exists()

    with service_process(env=env) as service:
        assert "embedded PostgreSQL" in service.output()
        # The production shape from the first run: requests as a role RLS binds, not as the
        # superuser that owns the data directory.
        assert "database: postgresql://tasks_api@" in service.output()
        created = httpx.post(
            f"{service.base_url}/api/tasks", json={"title": "kept"}, headers=bearer(token())
        )
        assert created.status_code == 201

    secret_file = data_dir / "jwt-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert len(secret_file.read_text().strip()) >= 32
    first_secret = secret_file.read_text()

    # Restart: same secret, same data.
    with service_process(env=env) as service:
        listed = httpx.get(f"{service.base_url}/api/tasks", headers=bearer(token()))
    assert [task["id"] for task in listed.json()["tasks"]] == [created.json()["id"]]
    assert secret_file.read_text() == first_secret
    # Stopping the service (SIGTERM) stopped the PostgreSQL it had started, too.
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()
