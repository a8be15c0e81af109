"""A Python client generated from contracts/openapi.yaml by openapi-python-client works against
the live service without hand edits: the contract is exact enough to build clients from."""

import importlib
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.support.factories import UserFactory
from tests.support.operations import CONTRACT_PATH
from tests.support.tokens import mint

PACKAGE = "tasks_client"


@pytest.fixture(scope="module")
def client_package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    out = tmp_path_factory.mktemp("generated")
    config = out / "config.yaml"
    config.write_text(f"package_name_override: {PACKAGE}\npost_hooks: []\n")
    generator = Path(sys.executable).parent / "openapi-python-client"
    subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(CONTRACT_PATH),
            "--output-path",
            str(out / "client"),
            "--config",
            str(config),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    sys.path.insert(0, str(out / "client"))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out / "client"))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def _api(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.api.tasks.{name}")


def test_the_generated_client_runs_the_full_lifecycle(
    client_package: ModuleType, base_url: str
) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    user = UserFactory.create()
    with client_package.AuthenticatedClient(base_url=base_url, token=user.token) as client:
        _lifecycle(client, models, base_url, client_package)


def _lifecycle(client: Any, models: Any, base_url: str, client_package: ModuleType) -> None:
    created = [
        _api("create_task").sync(client=client, body=models.TaskCreate(title=f"task {i}"))
        for i in range(3)
    ]
    assert all(isinstance(task, models.Task) for task in created)
    assert created[0].title == "task 0"

    first = _api("list_tasks").sync(client=client, limit=2)
    assert isinstance(first, models.TaskPage)
    assert [task.id for task in first.tasks] == [created[0].id, created[1].id]
    second = _api("list_tasks").sync(client=client, limit=2, cursor=first.next_cursor)
    assert [task.id for task in second.tasks] == [created[2].id]
    assert second.next_cursor is None

    task_id = str(created[0].id)
    fetched = _api("get_task").sync(task_id, client=client)
    assert fetched.to_dict() == created[0].to_dict()

    replaced = _api("replace_task").sync(
        task_id, client=client, body=models.TaskReplace(title="replaced", completed=True)
    )
    assert (replaced.title, replaced.completed) == ("replaced", True)

    patched = _api("update_task").sync(
        task_id, client=client, body=models.TaskUpdate(completed=False)
    )
    assert patched.completed is False

    toggled = _api("toggle_task_completion").sync(task_id, client=client)
    assert toggled.completed is True

    deleted = _api("delete_task").sync(task_id, client=client)
    assert deleted.success is True

    missing = _api("get_task").sync_detailed(task_id, client=client)
    assert missing.status_code == 404
    assert isinstance(missing.parsed, models.Problem)
    assert missing.parsed.status == 404

    stranger_token = mint(secret="q" * 48)
    with client_package.AuthenticatedClient(base_url=base_url, token=stranger_token) as stranger:
        refused = _api("list_tasks").sync_detailed(client=stranger)
    assert refused.status_code == 401
    assert isinstance(refused.parsed, models.Problem)


class _LosesTheFirstResponse(httpx.HTTPTransport):
    """Sends every request; throws the first response away, as a dropped connection would
    after the server did the work."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if not self.lost:
            self.lost = True
            response.close()
            raise httpx.ReadError("the response was lost", request=request)
        return response


def _with_retries(attempt: Any) -> Any:
    for tries in (1, 2, 3):
        try:
            return attempt()
        except httpx.TransportError:
            if tries == 3:
                raise
    raise AssertionError("unreachable")


def test_the_generated_client_retries_safely_and_loses_no_update(
    client_package: ModuleType, base_url: str
) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    user = UserFactory.create()
    flaky = client_package.AuthenticatedClient(
        base_url=base_url, token=user.token, httpx_args={"transport": _LosesTheFirstResponse()}
    )
    client = client_package.AuthenticatedClient(base_url=base_url, token=user.token)
    with flaky, client:
        key = str(uuid.uuid4())
        created = _with_retries(
            lambda: _api("create_task").sync_detailed(
                client=flaky, body=models.TaskCreate(title="retried once"), idempotency_key=key
            )
        )
        assert created.status_code == 201
        assert created.headers["idempotent-replayed"] == "true"
        titles = [task.title for task in _api("list_tasks").sync(client=client, limit=200).tasks]
        assert titles == ["retried once"]

        task_id = str(created.parsed.id)
        read = _api("get_task").sync_detailed(task_id, client=client)
        etag = read.headers["etag"]
        first = _api("update_task").sync_detailed(
            task_id, client=client, body=models.TaskUpdate(title="phone"), if_match=etag
        )
        assert first.status_code == 200
        stale = _api("update_task").sync_detailed(
            task_id, client=client, body=models.TaskUpdate(completed=True), if_match=etag
        )
        assert stale.status_code == 412
        assert isinstance(stale.parsed, models.Problem)
        fresh = _api("get_task").sync_detailed(task_id, client=client).headers["etag"]
        merged = _api("update_task").sync(
            task_id, client=client, body=models.TaskUpdate(completed=True), if_match=fresh
        )
        assert (merged.title, merged.completed) == ("phone", True)


def test_the_readme_python_snippet_runs_as_written(
    client_package: ModuleType, base_url: str
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    found = re.search(r"<!-- python-snippet:[^>]*-->\n```python\n(.*?)```", readme, re.S)
    assert found is not None
    package_dir = str(Path(client_package.__file__ or "").parent.parent)
    user = UserFactory.create()
    result = subprocess.run(
        [sys.executable, "-c", found.group(1)],
        env={
            **os.environ,
            "PYTHONPATH": package_dir,
            "TOKEN": user.token,
            "TASKS_API_URL": base_url,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # One task though the create ran twice (the key), and the conditional change applied.
    assert result.stdout.strip() == "Buy milk 1 200"
