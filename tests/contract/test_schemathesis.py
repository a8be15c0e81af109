"""Schemathesis against contracts/openapi.yaml (loaded from the file, not from the app), calling
the live service over HTTP with real tokens, with every default check, on positive and
negative data, then in link-driven stateful sequences.

Deterministic for CI: derandomized, with a bounded number of examples per operation.
"""

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.generation.modes import GenerationMode

from tests.support.factories import UserFactory
from tests.support.operations import CONTRACT_PATH
from tests.support.tokens import mint

schema = schemathesis.openapi.from_path(CONTRACT_PATH)
schema.config.generation.update(modes=list(GenerationMode))  # positive and negative data


class _Caller:
    """Whose token requests carry: a fresh user per stateful scenario, so each scenario starts
    from an empty task list and a replayed scenario sees the same responses."""

    sub: str = UserFactory.create().sub


@schema.auth(refresh_interval=None)
class RealBearerToken:
    """A real HS256 token for the current caller. Registered as the schema's auth (rather than
    sent as a header by the test) so schemathesis can still leave it out where a case tests
    exactly that, and its ignored_auth check can retry without it."""

    def get(self, case: Any, context: Any) -> str:
        return mint(_Caller.sub)

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def _drop_cursors_not_issued(case: Any, issued: set[str]) -> None:
    """A cursor is valid only exactly as the service issued it to this user (it carries a MAC),
    so a random string of the declared shape is rightly a 400. Positive cases therefore only
    send cursors the service handed out; negative cases keep whatever was generated."""
    cursor = (case.query or {}).get("cursor")
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if cursor is not None and positive and cursor not in issued:
        del case.query["cursor"]


@schema.parametrize()
@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_service_keeps_its_contract(case: Any, base_url: str) -> None:
    _drop_cursors_not_issued(case, issued=set())
    case.call_and_validate(base_url=base_url)


def test_stateful_sequences_follow_the_contracts_links(
    base_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """create -> read / replace / patch / toggle / delete, chained by the contract's links,
    so checks such as use_after_free and ensure_resource_availability see real resources."""
    base = schema.as_state_machine()
    succeeded: set[str] = set()

    class Workflow(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            _Caller.sub = UserFactory.create().sub
            self.issued: set[str] = set()

        def before_call(self, case: Any) -> None:
            _drop_cursors_not_issued(case, self.issued)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base_url}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            if response.status_code < 300:
                succeeded.add(case.operation.definition.raw["operationId"])
            if response.status_code == 200 and "next_cursor" in response.text:
                cursor = response.json().get("next_cursor")
                if cursor:
                    self.issued.add(cursor)

    Workflow.run(
        settings=settings(
            max_examples=40,
            stateful_step_count=8,
            derandomize=True,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )

    # A random id never finds a task, so a success on an {id} operation proves the step
    # followed a link from createTask to a real resource.
    linked = {"getTask", "replaceTask", "updateTask", "toggleTaskCompletion", "deleteTask"}
    with capsys.disabled():  # shown in every run's output, as the record that steps chained
        print(f"\nstateful: operations that succeeded via links: {sorted(succeeded)}")
    assert linked <= succeeded
