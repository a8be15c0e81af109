"""Schemathesis against contracts/openapi.yaml (loaded from the file, not from the app), calling
the live service over HTTP with real tokens, with every default check, on positive and
negative data, then in link-driven stateful sequences.

Deterministic for CI: derandomized, with a bounded number of examples per operation.
"""

import uuid
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import PositiveDataAcceptanceConfig
from schemathesis.generation.modes import GenerationMode

from tests.contract.hooks import (
    drop_cursors_not_issued,
    drop_invalid_headers_from_positive_cases,
    remember_cursor,
)
from tests.support.factories import UserFactory
from tests.support.operations import CONTRACT, CONTRACT_PATH
from tests.support.tokens import mint

EXAMPLE_KEY = CONTRACT["components"]["parameters"]["IdempotencyKey"]["example"]

schema = schemathesis.openapi.from_path(CONTRACT_PATH)
schema.config.generation.update(modes=list(GenerationMode))  # positive and negative data
# Valid requests the task's state may refuse, besides the default set: 412 (If-Match names a
# version the task is not at: a random ETag never names the current one) and 422 (an
# Idempotency-Key already used for another request: generated keys repeat). The same list is
# in schemathesis.toml for the CLI campaign.
schema.config.checks.positive_data_acceptance = PositiveDataAcceptanceConfig(
    expected_statuses=["2xx", "3xx", "401", "403", "404", "409", "412", "422", "429", "5xx"]
)


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


@schema.parametrize()
@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_service_keeps_its_contract(case: Any, base_url: str) -> None:
    drop_cursors_not_issued(case, issued=set())
    drop_invalid_headers_from_positive_cases(case)
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
            drop_cursors_not_issued(case, self.issued)
            drop_invalid_headers_from_positive_cases(case)
            # A client makes a key per request; the contract's one example key, sent by a
            # create and then by a toggle, would be one key for two requests (a 422).
            if (case.headers or {}).get("Idempotency-Key") == EXAMPLE_KEY:
                case.headers["Idempotency-Key"] = f"key-{uuid.uuid4()}"

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base_url}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            if response.status_code < 300:
                succeeded.add(case.operation.definition.raw["operationId"])
            remember_cursor(response, self.issued)

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
