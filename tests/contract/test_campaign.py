"""The schemathesis CLI, as QA runs it, against `tasks-api serve` over HTTP: every phase,
positive and negative data, every check, two identities. Seeded and bounded for CI; `tox -e
fuzz` runs the same campaign long and random."""

from pathlib import Path

import pytest

from tests.contract.campaign import checks_run, run_schemathesis
from tests.support.databases import as_service
from tests.support.live import service_process
from tests.support.tokens import SECRET


def test_cli_campaign_runs_every_phase_and_check_without_failures(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"DATABASE_URL": as_service(database_url), "JWT_SECRET": SECRET}
    with service_process("--no-migrate", env=env) as service:
        result = run_schemathesis(service.base_url, env, tmp_path, max_examples=25, seed=2026)

    with capsys.disabled():  # the phase table and the stateful link coverage, for the record
        print("\n" + result.stdout[result.stdout.find("Examples") - 5 :])
    assert result.returncode == 0, result.stdout + result.stderr
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in result.stdout
    assert "No issues found" in result.stdout
    ran = checks_run(tmp_path)
    expected = {
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "positive_data_acceptance",
        "ignored_auth",
        "use_after_free",
        "ensure_resource_availability",
        "missing_required_header",
        "unsupported_method",
        "object_level_authorization",
    }
    assert expected <= {name for name, count in ran.items() if count > 0}
