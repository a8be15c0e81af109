"""Copies the README's TypeScript snippet to src/readme.ts, so that `tsc` compiles it with this
project's settings and run_live.py runs it (part of `tox -e client-ts`)."""

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE.parents[1] / "README.md"


def main() -> None:
    found = re.search(
        r"<!-- typescript-snippet:[^>]*-->\n```ts\n(.*?)```", README.read_text(), re.S
    )
    if found is None:
        raise SystemExit("README.md has no typescript-snippet block")
    (HERE / "src" / "readme.ts").write_text(found.group(1))


if __name__ == "__main__":
    main()
