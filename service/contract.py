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
    return Path(__file__).resolve().parent.parent / "contracts" / "openapi.yaml"


@cache
def load_contract() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(contract_path().read_text(encoding="utf-8"))
    return document
