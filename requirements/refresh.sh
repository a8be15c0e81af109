#!/bin/sh
# Refresh the hashed lock files tox and .ci/run install from, after changing a dependency in
# pyproject.toml or in one of the *.in files here. Needs uv (`python3 -m pip install uv`).
# Then run `tox` and commit the changed *.txt files.
set -eu
cd "$(dirname "$0")"
compile() { uv pip compile --quiet --universal --python-version 3.11 --generate-hashes "$@"; }
compile ../pyproject.toml -o runtime.txt
compile ../pyproject.toml --extra test -o test.txt
compile ../pyproject.toml --extra test type.in -o type.txt
compile lint.in -o lint.txt
compile tox.in -o tox.txt
compile build.in -o build.txt
