"""docs/SECURITY.md names the tests that prove each rule; every name it gives must exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_named_in_the_security_doc_exists() -> None:
    doc = (ROOT / "docs" / "SECURITY.md").read_text()
    named = set(re.findall(r"\b(test_[a-z0-9_]+)\b", doc)) - {
        name.removesuffix(".py") for name in re.findall(r"\b(test_[a-z0-9_]+\.py)\b", doc)
    }
    defined = {
        match
        for path in (ROOT / "tests").rglob("test_*.py")
        for match in re.findall(r"^def (test_[a-z0-9_]+)", path.read_text(), re.MULTILINE)
    }
    assert named
    assert named - defined == set()
