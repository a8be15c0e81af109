"""The hand-written contract, which the app serves instead of FastAPI's generated schema."""

from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml


def contract_path() -> Path:
    # An installed wheel carries the contract inside the package; a source checkout (and an
    # editable install) reads the repository's contracts/openapi.yaml directly.
    packaged = Path(str(files("service") / "openapi.yaml"))
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "contracts" / "openapi.yaml"


@cache
def load_contract() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(contract_path().read_text(encoding="utf-8"))
    return document


def declared_query_parameters(contract: dict[str, Any]) -> dict[str, frozenset[str]]:
    """The query parameters the contract declares, by operationId."""
    declared: dict[str, frozenset[str]] = {}
    for item in contract["paths"].values():
        for operation in item.values():
            if not isinstance(operation, dict) or "operationId" not in operation:
                continue
            parameters = [*item.get("parameters", []), *operation.get("parameters", [])]
            names = {
                resolve(contract, parameter)["name"]
                for parameter in parameters
                if resolve(contract, parameter)["in"] == "query"
            }
            declared[operation["operationId"]] = frozenset(names)
    return declared


def operations_with_a_body(contract: dict[str, Any]) -> frozenset[str]:
    """The operationIds whose contract declares a request body."""
    return frozenset(
        operation["operationId"]
        for item in contract["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "requestBody" in operation
    )


def resolve(contract: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """`node`, following a `$ref` within the contract."""
    while "$ref" in node:
        target: Any = contract
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node
