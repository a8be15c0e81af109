"""The operations of contracts/openapi.yaml, read from the file itself.

Security and contract tests iterate over these, so an operation added to the contract is
covered by them without anyone remembering to add it.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from service.http import contract

CONTRACT_PATH = Path(__file__).resolve().parents[2] / "contracts" / "openapi.yaml"


class _StrictLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; client generators reject the file. So do we."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        duplicates = {key for key in keys if keys.count(key) > 1}
        if duplicates:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate keys {sorted(duplicates)}", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


CONTRACT: dict[str, Any] = yaml.load(
    CONTRACT_PATH.read_text(encoding="utf-8"),
    Loader=_StrictLoader,  # noqa: S506 - a SafeLoader subclass
)
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    path: str
    secured: bool
    example_body: dict[str, Any] | None
    # The request header fields the contract declares for it (If-Match, Idempotency-Key, ...).
    header_parameters: frozenset[str] = frozenset()

    @property
    def takes_id(self) -> bool:
        return "{id}" in self.path

    @property
    def resource(self) -> str:
        """The resource the path addresses, named by its collection: `tasks` for both
        /api/tasks and /api/tasks/{id}/complete. An `{id}` is always an id of this kind."""
        return self.path.removeprefix("/api/").split("/")[0]

    @property
    def item_path(self) -> str:
        """The path of one item of this operation's resource: /api/<resource>/{id}."""
        return f"/api/{self.resource}/{{id}}"

    def url(self, item_id: str = "00000000-0000-4000-8000-000000000000") -> str:
        return self.path.replace("{id}", item_id)

    def __str__(self) -> str:
        return self.operation_id


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """Follow `$ref`s within the contract."""
    return contract.resolve(CONTRACT, node)


def _example_body(operation: dict[str, Any]) -> dict[str, Any] | None:
    if "requestBody" not in operation:
        return None
    schema = resolve(operation["requestBody"]["content"]["application/json"]["schema"])
    example: dict[str, Any] = schema["examples"][0]
    return example


def contract_operations() -> list[Operation]:
    default_security = CONTRACT.get("security", [])
    found = []
    for path, item in CONTRACT["paths"].items():
        for method in HTTP_METHODS:
            if method not in item:
                continue
            operation = item[method]
            found.append(
                Operation(
                    operation_id=operation["operationId"],
                    method=method.upper(),
                    path=path,
                    secured=bool(operation.get("security", default_security)),
                    example_body=_example_body(operation),
                    header_parameters=frozenset(
                        resolve(parameter)["name"]
                        for parameter in [
                            *item.get("parameters", []),
                            *operation.get("parameters", []),
                        ]
                        if resolve(parameter)["in"] == "header"
                    ),
                )
            )
    return found


SECURED_OPERATIONS = [op for op in contract_operations() if op.secured]
ITEM_OPERATIONS = [op for op in contract_operations() if op.takes_id]
